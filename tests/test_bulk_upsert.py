"""bulk_upsert: counts, duplicate keys, all-or-nothing, bounded memory."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pricing_store import (
    BrandGroupRepository,
    InvalidValueError,
    ModelRepository,
    UpsertResult,
)
from tests.factories import brand_group, model


def rows(count: int, *, price: int = 25, start: int = 0) -> Iterator[dict[str, Any]]:
    for number in range(start, start + count):
        yield {"brand": f"Brand {number}", "group_name": "jeans", "base_price": price}


async def prices(session: AsyncSession) -> dict[str, Decimal]:
    result = await session.execute(text("SELECT brand, base_price FROM public.brand_groups"))
    return {brand: price for brand, price in result}


async def updated_at(session: AsyncSession) -> dict[str, datetime]:
    result = await session.execute(text("SELECT brand, updated_at FROM public.brand_groups"))
    return {brand: moment for brand, moment in result}


async def test_counts_inserted_updated_and_unchanged(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory.begin() as first:
        await BrandGroupRepository(first).bulk_upsert(rows(30))
        before = await updated_at(first)

    async with session_factory.begin() as second:
        changed = list(rows(10, price=40))  # Brand 0-9: new price
        result = await BrandGroupRepository(second).bulk_upsert(
            [*changed, *rows(20, start=10), *rows(5, start=30)]
        )
        after = await updated_at(second)
        stored = await prices(second)

    assert result == UpsertResult(inserted=5, updated=10, unchanged=20)
    assert stored["Brand 3"] == Decimal("40.00")
    assert stored["Brand 15"] == Decimal("25.00")
    assert len(stored) == 35
    assert after["Brand 3"] > before["Brand 3"]
    assert after["Brand 15"] == before["Brand 15"]


async def wait_for_a_blocked_backend(admin_engine: AsyncEngine) -> None:
    """Return once some backend of this database waits on another's lock."""
    for _ in range(500):
        async with admin_engine.connect() as connection:
            blocked = await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND cardinality(pg_blocking_pids(pid)) > 0"
                )
            )
        if blocked:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the bulk load never waited for the other transaction")


async def test_keys_another_transaction_commits_meanwhile_are_merged(
    session_factory: async_sessionmaker[AsyncSession], admin_engine: AsyncEngine
) -> None:
    async with session_factory() as racer:
        await racer.begin()
        repository = BrandGroupRepository(racer)
        await repository.upsert({"brand": "Brand 2", "group_name": "jeans", "base_price": 99})
        await repository.upsert({"brand": "Brand 3", "group_name": "jeans", "base_price": 25})
        async with session_factory.begin() as loader:
            # The load's insert of Brand 2 and 3 waits on the racer's uncommitted rows,
            # then finds them committed.
            load = asyncio.create_task(BrandGroupRepository(loader).bulk_upsert(rows(5)))
            await wait_for_a_blocked_backend(admin_engine)
            await racer.commit()
            result = await load
            stored = await prices(loader)

    assert result == UpsertResult(inserted=3, updated=1, unchanged=1)
    assert stored == {f"Brand {number}": Decimal("25.00") for number in range(5)}


async def test_repeated_keys_resolve_to_the_last_after_canonicalisation(
    session: AsyncSession,
) -> None:
    items = [
        *rows(100),
        {"brand": "Levi's", "group_name": "jeans", "base_price": 20},
        {"brand": "  Levi's ", "group_name": "jeans", "base_price": 30},
    ]

    result = await BrandGroupRepository(session).bulk_upsert(items, batch_size=7)

    assert result == UpsertResult(inserted=101, updated=0, unchanged=0)
    assert (await prices(session))["Levi's"] == Decimal("30.00")


@pytest.mark.parametrize("repeated", [False, True], ids=["distinct keys", "a repeated key"])
async def test_a_column_left_out_takes_its_default_on_update_too(
    session: AsyncSession, repeated: bool
) -> None:
    repository = BrandGroupRepository(session)
    await repository.upsert(
        brand_group(brand="Levi's", condition_sensitivity="1.3", expected_origins=["USA"])
    )
    item = {"brand": "Levi's", "group_name": "jeans", "base_price": 30}

    result = await repository.bulk_upsert([item, item] if repeated else [item])

    stored = (
        await session.execute(
            text(
                "SELECT condition_sensitivity, expected_origins FROM public.brand_groups "
                "WHERE brand = 'Levi''s'"
            )
        )
    ).one()
    assert result == UpsertResult(inserted=0, updated=1, unchanged=0)
    assert tuple(stored) == (Decimal("1.00"), [])


async def test_model_objects_and_mappings_mix_and_defaults_fill_gaps(
    session: AsyncSession,
) -> None:
    repository = ModelRepository(session)
    result = await repository.bulk_upsert(
        [
            model(name="501", coefficient="1.4"),
            {
                "brand": "Levi's",
                "group_name": "jeans",
                "model": "Big E",
                "coefficient": 2.5,
                "expected_features": ["selvedge", "chain_stitching"],
            },
            {"brand": "Levi's", "group_name": "jeans", "model": "505"},
        ]
    )

    listed = await repository.find_by_brand_and_group("Levi's", "jeans")
    assert result.inserted == 3
    assert [(row.model, row.coefficient, row.expected_features) for row in listed] == [
        ("501", Decimal("1.40"), []),
        ("505", Decimal("1.00"), []),
        ("Big E", Decimal("2.50"), ["selvedge", "chain_stitching"]),
    ]


# Quotes, backslashes, control characters and non-ASCII text, which JSON must escape or keep.
AWKWARD = [
    'say "hi"',
    "back\\slash",
    "tab\there",
    "new\nline",
    "Łódź 日本",
    "no\u00a0break",
    "line\u2028end",
]


async def test_list_elements_are_stored_exactly_by_every_write_path(session: AsyncSession) -> None:
    repository = BrandGroupRepository(session)
    await repository.bulk_upsert(
        [
            {"brand": "Bulk", "group_name": "jeans", "base_price": 25, "expected_trends": AWKWARD},
            {"brand": "Empty", "group_name": "jeans", "base_price": 25, "expected_trends": []},
        ]
    )
    await repository.upsert(
        {"brand": "One", "group_name": "jeans", "base_price": 25, "expected_trends": AWKWARD}
    )

    result = await session.execute(
        text("SELECT brand, expected_trends FROM public.brand_groups ORDER BY brand")
    )
    stored = {brand: trends for brand, trends in result}
    assert stored == {"Bulk": AWKWARD, "Empty": [], "One": AWKWARD}


async def test_a_bad_row_in_the_middle_writes_nothing_and_keeps_the_transaction(
    session: AsyncSession,
) -> None:
    repository = BrandGroupRepository(session)
    kept = await repository.create(brand_group("Nike", "sneakers"))

    def stream() -> Iterator[dict[str, Any]]:
        yield from rows(500)
        yield {"brand": "Bad", "group_name": "jeans", "base_price": "19.999"}
        yield from rows(499, start=500)

    with pytest.raises(InvalidValueError, match=r"^items\[500\]\.base_price: must have at most 2"):
        await repository.bulk_upsert(stream(), batch_size=100)

    assert await repository.count() == 1
    assert await repository.find_by_brand_and_group("Nike", "sneakers") is kept
    assert (await repository.bulk_upsert(rows(3))).inserted == 3


async def test_invalid_items_name_their_position_and_field(session: AsyncSession) -> None:
    repository = ModelRepository(session)
    with pytest.raises(InvalidValueError, match=r"^items\[1\]\.model: must not be empty"):
        await repository.bulk_upsert([model(), {"brand": "a", "group_name": "b", "model": " "}])
    with pytest.raises(InvalidValueError, match=r"^items\[0\]\.model: is required"):
        await repository.bulk_upsert([{"brand": "a", "group_name": "b"}])
    with pytest.raises(InvalidValueError, match=r"^items\[0\]\.item: must be a Model"):
        await repository.bulk_upsert([brand_group()])
    # Half an emoji, as an LLM's JSON can carry it, cannot be stored: named, not a crash.
    with pytest.raises(InvalidValueError, match=r"^items\[1\]\.expected_features: .*surrogate"):
        await repository.bulk_upsert(
            [
                model(),
                {"brand": "a", "group_name": "b", "model": "S", "expected_features": ["\ud83d"]},
            ]
        )
    with pytest.raises(InvalidValueError, match=r"^batch_size: must be at least 1, got 0"):
        await repository.bulk_upsert([model()], batch_size=0)
    assert await repository.count() == 0


async def test_the_callers_rollback_undoes_the_whole_load(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as writer:
        async with writer.begin():
            await BrandGroupRepository(writer).bulk_upsert(rows(50))
            await writer.rollback()
        assert await BrandGroupRepository(writer).count() == 0


async def peak_memory_of_streamed_load(session: AsyncSession, count: int, start: int) -> int:
    tracemalloc.start()
    try:
        result = await BrandGroupRepository(session).bulk_upsert(
            rows(count, start=start), batch_size=1_000
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.inserted == count
    return peak


async def test_memory_stays_flat_as_a_streamed_load_grows(session: AsyncSession) -> None:
    await BrandGroupRepository(session).bulk_upsert(rows(10))  # warm up compiled statements

    small = await peak_memory_of_streamed_load(session, 5_000, start=100)
    large = await peak_memory_of_streamed_load(session, 30_000, start=10_000)

    # Six times the rows, yet the peak stays under twice as high (driver buffers, not rows)
    # and far below the 9 MB and more that holding 30,000 rows would take.
    assert large < 2 * small
    assert large < 4 * 1024 * 1024
