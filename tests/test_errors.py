"""One error surface: every failure on the database side is a package error, on every path."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import pricing_store
from pricing_store import (
    BrandGroupRepository,
    DatabaseTimeoutError,
    DatabaseUnavailableError,
    PricingLookup,
    PricingStoreError,
    SchemaNotMigratedError,
    create_engine,
    create_session_factory,
)
from pricing_store.errors import driver_error_of
from tests.factories import brand_group
from tests.provision import asyncpg_dsn


@pytest.fixture
async def raw(admin_engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(asyncpg_dsn(admin_engine.url))
    yield connection
    await connection.close()


def test_every_error_is_importable_from_the_package() -> None:
    for name in (
        "PricingStoreError",
        "InvalidValueError",
        "DuplicateKeyError",
        "DatabaseUnavailableError",
        "DatabaseTimeoutError",
        "SchemaNotMigratedError",
        "GenerationTimeoutError",
    ):
        assert issubclass(getattr(pricing_store, name), PricingStoreError)
    assert issubclass(DatabaseTimeoutError, TimeoutError)


async def test_a_one_row_write_waiting_on_a_lock_past_lock_timeout(
    session_factory: async_sessionmaker[AsyncSession], raw: asyncpg.Connection
) -> None:
    async with session_factory.begin() as writer:
        await BrandGroupRepository(writer).create(brand_group())
    holder = raw.transaction()
    await holder.start()
    await raw.execute("SELECT 1 FROM public.brand_groups FOR UPDATE")
    try:
        async with session_factory() as session, session.begin():
            await session.execute(text("SET LOCAL lock_timeout = '100ms'"))
            with pytest.raises(DatabaseTimeoutError, match="lock_timeout") as raised:
                await BrandGroupRepository(session).upsert(brand_group(base_price=30))
    finally:
        await holder.rollback()
    assert isinstance(raised.value, TimeoutError)
    assert isinstance(raised.value.__cause__, DBAPIError)  # SQLAlchemy's, as for any statement
    assert isinstance(driver_error_of(raised.value.__cause__), asyncpg.LockNotAvailableError)


async def test_a_bulk_copy_past_statement_timeout(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as session, session.begin():
        await session.execute(text("SET LOCAL statement_timeout = '1ms'"))
        with pytest.raises(DatabaseTimeoutError, match="statement_timeout"):
            await BrandGroupRepository(session).bulk_upsert(
                brand_group(f"Brand {number}") for number in range(50_000)
            )


@pytest.mark.parametrize("path", ["upsert", "find", "bulk_upsert"])
async def test_a_killed_connection_is_unavailable_on_every_path(
    engine: AsyncEngine, raw: asyncpg.Connection, path: str
) -> None:
    session = create_session_factory(engine)()
    repository = BrandGroupRepository(session)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "upsert": lambda: repository.upsert(brand_group()),
        "find": lambda: repository.find_by_brand_and_group("Levi's", "jeans"),
        "bulk_upsert": lambda: repository.bulk_upsert([brand_group()]),
    }
    try:
        await repository.count()  # the session holds its connection now
        pid = await session.scalar(text("SELECT pg_backend_pid()"))
        await raw.execute("SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(0.1)
        with pytest.raises(DatabaseUnavailableError):
            await calls[path]()
    finally:
        with contextlib.suppress(PricingStoreError):  # its rollback meets the dead connection
            await session.close()


async def test_a_full_pool_is_a_timeout(engine: AsyncEngine) -> None:
    small = create_engine(engine.url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    sessions = create_session_factory(small)
    try:
        async with sessions() as holding:
            await holding.connection()
            async with sessions() as waiting:
                with pytest.raises(DatabaseTimeoutError, match="no pooled connection"):
                    await BrandGroupRepository(waiting).count()
    finally:
        await small.dispose()


async def test_missing_tables_say_to_migrate(empty_database: URL) -> None:
    engine = create_engine(empty_database)
    try:
        async with create_session_factory(engine)() as session:
            with pytest.raises(SchemaNotMigratedError, match=r'run "make migrate"'):
                await BrandGroupRepository(session).find_by_brand_and_group("Levi's", "jeans")
        async with PricingLookup(engine) as lookup:
            with pytest.raises(SchemaNotMigratedError, match="brand_groups"):
                await lookup.get("Levi's", "jeans")
    finally:
        await engine.dispose()


@pytest.mark.parametrize("wrong", ["database", "role"])
async def test_an_unknown_database_or_role_is_unavailable(engine: AsyncEngine, wrong: str) -> None:
    url = (
        engine.url.set(database="no_such_database")
        if wrong == "database"
        else engine.url.set(username="no_such_role")
    )
    bad = create_engine(url)
    try:
        async with create_session_factory(bad)() as session:
            with pytest.raises(DatabaseUnavailableError) as raised:
                await BrandGroupRepository(session).count()
        async with PricingLookup(bad) as lookup:
            with pytest.raises(DatabaseUnavailableError):
                await lookup.get("Levi's", "jeans")
    finally:
        await bad.dispose()
    assert "sqlalchemy" not in str(raised.value)
    assert raised.value.__cause__ is not None


async def test_a_lookup_waits_for_a_busy_read_connection_only_so_long(engine: AsyncEngine) -> None:
    async with PricingLookup(engine, pool_size=1, pool_timeout=0.2) as lookup:
        pool = lookup._pool
        assert pool is not None
        busy = asyncio.ensure_future(pool.fetch("SELECT pg_sleep(1)"))
        await asyncio.sleep(0.1)
        with pytest.raises(DatabaseTimeoutError, match=r"no read connection free within 0.2 s"):
            await lookup.get("Levi's", "jeans")
        await busy
        assert await lookup.get("Levi's", "jeans") is None  # free again
