"""Idempotent write paths: upsert and get_or_create."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pricing_store import (
    BrandGroupRepository,
    InvalidValueError,
    ModelRepository,
    create_engine,
    create_session_factory,
)
from tests.factories import brand_group, model


@asynccontextmanager
async def statements_sent(session: AsyncSession) -> AsyncIterator[list[str]]:
    """Collect every statement the session sends in the block, as SQLAlchemy's events see it
    (what OpenTelemetry, Sentry and `echo` hook into)."""
    statements: list[str] = []
    connection = await session.connection()

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(connection.sync_connection, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(connection.sync_connection, "before_cursor_execute", record)


@pytest.fixture
async def wide_factory(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a pool wide enough for 50 truly concurrent transactions."""
    wide = create_engine(engine.url, pool_size=50, max_overflow=0)
    yield create_session_factory(wide)
    await wide.dispose()


async def row_version(session: AsyncSession, brand: str) -> tuple[str, Any]:
    row = (
        await session.execute(
            text("SELECT xmin::text, updated_at FROM public.brand_groups WHERE brand = :b"),
            {"b": brand},
        )
    ).one()
    return row[0], row[1]


async def test_upsert_inserts_a_missing_row(session: AsyncSession) -> None:
    row = await BrandGroupRepository(session).upsert(brand_group(expected_origins=["USA"]))

    assert isinstance(row.id, int)
    assert row.base_price == Decimal("25.00")
    assert row.expected_origins == ["USA"]
    assert row.condition_sensitivity == Decimal("1.00")
    assert row.created_at == row.updated_at


async def test_upsert_overwrites_data_keeps_created_at_and_advances_updated_at(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory.begin() as first:
        original = await BrandGroupRepository(first).upsert(brand_group(base_price=25))

    async with session_factory.begin() as second:
        updated = await BrandGroupRepository(second).upsert(
            {
                "brand": " Levi's",
                "group_name": "jeans",
                "base_price": "27.50",
                "expected_trends": ["y2k"],
            }
        )

    assert updated.id == original.id
    assert updated.base_price == Decimal("27.50")
    assert updated.expected_trends == ["y2k"]
    assert updated.created_at == original.created_at
    assert updated.updated_at > original.updated_at


async def test_upsert_of_identical_data_writes_nothing(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory.begin() as first:
        await BrandGroupRepository(first).upsert(brand_group(expected_origins=["USA"]))
        before = await row_version(first, "Levi's")

    async with session_factory.begin() as second:
        again = await BrandGroupRepository(second).upsert(brand_group(expected_origins=["USA"]))
        after = await row_version(second, "Levi's")

    assert after == before  # same row version (xmin) and the same updated_at
    assert again.updated_at == before[1]


async def test_upsert_refreshes_the_copy_already_in_the_session(session: AsyncSession) -> None:
    repository = BrandGroupRepository(session)
    loaded = await repository.create(brand_group(base_price=25))

    returned = await repository.upsert(brand_group(base_price=30, condition_sensitivity="1.2"))

    assert returned is loaded
    assert loaded.base_price == Decimal("30.00")
    assert loaded.condition_sensitivity == Decimal("1.20")


async def test_upsert_is_one_round_trip(session: AsyncSession) -> None:
    repository = ModelRepository(session)
    await repository.upsert(model())

    async with statements_sent(session) as statements:
        row = await repository.upsert(model(coefficient="1.4"))

    assert len(statements) == 1
    assert row.coefficient == Decimal("1.40")


async def test_upsert_sets_left_out_columns_to_their_defaults(session: AsyncSession) -> None:
    repository = ModelRepository(session)
    await repository.upsert(model(coefficient="2.5", expected_features=["selvedge"]))

    row = await repository.upsert({"brand": "Levi's", "group_name": "jeans", "model": "501"})

    assert row.coefficient == Decimal("1.00")
    assert row.expected_features == []


async def test_bad_upsert_input_is_rejected_before_sql_and_keeps_the_transaction(
    session: AsyncSession,
) -> None:
    repository = BrandGroupRepository(session)
    await repository.upsert(brand_group("Nike", "sneakers"))

    with pytest.raises(InvalidValueError, match=r"^base_price: must be between"):
        await repository.upsert({"brand": "Levi's", "group_name": "jeans", "base_price": 4})
    with pytest.raises(InvalidValueError, match=r"^base_price: is required"):
        await repository.upsert({"brand": "Levi's", "group_name": "jeans"})
    with pytest.raises(InvalidValueError, match=r"^colour: is not a column of BrandGroup"):
        await repository.upsert({"brand": "Levi's", "group_name": "jeans", "colour": "blue"})
    with pytest.raises(InvalidValueError, match=r"^item: must be a BrandGroup or a mapping"):
        await repository.upsert(model())

    assert await repository.count() == 1


async def test_get_or_create_inserts_once_then_returns_the_row_untouched(
    session: AsyncSession,
) -> None:
    repository = BrandGroupRepository(session)

    created, was_created = await repository.get_or_create(brand_group(base_price=25))
    existing, again = await repository.get_or_create(brand_group(" Levi's ", base_price=99))

    assert (was_created, again) == (True, False)
    assert existing is created
    assert existing.base_price == Decimal("25.00")
    stored = await session.scalar(text("SELECT base_price FROM public.brand_groups"))
    assert stored == Decimal("25.00")


async def test_fifty_concurrent_get_or_create_calls_agree_on_one_row(
    wide_factory: async_sessionmaker[AsyncSession],
) -> None:
    start = asyncio.Event()

    async def get_or_create() -> tuple[int, bool]:
        async with wide_factory.begin() as own:
            await own.execute(text("SELECT 1"))  # hold a connection before the race starts
            await start.wait()
            row, created = await ModelRepository(own).get_or_create(model(name="Big E"))
            return row.id, created

    tasks = [asyncio.create_task(get_or_create()) for _ in range(50)]
    await asyncio.sleep(0.2)
    start.set()
    outcomes = await asyncio.gather(*tasks)

    assert sum(created for _, created in outcomes) == 1
    assert len({row_id for row_id, _ in outcomes}) == 1


async def test_writes_first_in_a_transaction_roll_back_with_it(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as writer:
        await writer.begin()
        await BrandGroupRepository(writer).upsert(brand_group("Levi's"))
        await writer.rollback()
        await writer.begin()
        await ModelRepository(writer).get_or_create(model())
        await writer.rollback()

    async with session_factory() as reader:
        assert await BrandGroupRepository(reader).count() == 0
        assert await ModelRepository(reader).count() == 0


async def test_upsert_flushes_pending_changes_first(session: AsyncSession) -> None:
    repository = BrandGroupRepository(session)
    session.add(brand_group("Nike", "sneakers"))

    await repository.upsert(brand_group("Levi's"))

    assert await repository.count() == 2


async def test_in_place_edits_of_an_upserted_row_are_saved(session: AsyncSession) -> None:
    repository = ModelRepository(session)
    row = await repository.upsert(model(expected_features=["selvedge"]))
    assert inspect(row).persistent
    assert row not in session.dirty  # loaded as stored: nothing to write back

    row.expected_features.append("chain_stitching")
    await session.flush()

    stored = await session.scalar(text("SELECT expected_features FROM public.models"))
    assert stored == ["selvedge", "chain_stitching"]
    assert row not in session.dirty
