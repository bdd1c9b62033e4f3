"""Faults as a host's code meets them: cancellations, timeouts and killed connections."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pricing_store import (
    BrandGroupRepository,
    DatabaseTimeoutError,
    DatabaseUnavailableError,
    InvalidValueError,
    PricingLookup,
    PricingStoreError,
    create_engine,
    create_session_factory,
)
from pricing_store.errors import driver_error_of
from tests.factories import brand_group
from tests.provision import asyncpg_dsn


@pytest.fixture
async def locker(admin_url: URL) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own, to hold locks the package's calls must wait for."""
    connection = await asyncpg.connect(asyncpg_dsn(admin_url))
    yield connection
    await connection.close()


@pytest.fixture
async def own_engine(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """An engine whose pool the test can inspect alone."""
    own = create_engine(engine.url, pool_size=2, max_overflow=0)
    yield own
    await own.dispose()


async def backend_of(session: AsyncSession) -> int:
    pid: int = await session.scalar(text("SELECT pg_backend_pid()"))
    return pid


@pytest.mark.parametrize("call", ["find", "upsert"])
async def test_a_timed_out_call_raises_timeout_and_its_connection_is_not_reused(
    own_engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
    locker: asyncpg.Connection,
    call: str,
) -> None:
    async with session_factory.begin() as writer:
        await BrandGroupRepository(writer).create(brand_group())
    holding = locker.transaction()
    await holding.start()
    await locker.execute("LOCK TABLE public.brand_groups IN ACCESS EXCLUSIVE MODE")
    sessions = create_session_factory(own_engine)
    try:
        async with sessions() as session:
            blocked_backend = await backend_of(session)
            repository = BrandGroupRepository(session)
            waiting = (
                repository.find_by_brand_and_group("Levi's", "jeans")
                if call == "find"
                else repository.upsert(brand_group(base_price=31))
            )
            with pytest.raises(TimeoutError) as raised:
                await asyncio.wait_for(waiting, 0.3)
            assert not isinstance(raised.value, PricingStoreError)  # asyncio's own
    finally:
        await holding.rollback()

    async with sessions() as session:  # the session above closed without an error
        assert await backend_of(session) != blocked_backend
        assert await BrandGroupRepository(session).find_by_brand_and_group("Levi's", "jeans")


async def test_a_cancelled_task_stays_cancelled(
    session_factory: async_sessionmaker[AsyncSession], locker: asyncpg.Connection
) -> None:
    holding = locker.transaction()
    await holding.start()
    await locker.execute("LOCK TABLE public.brand_groups IN ACCESS EXCLUSIVE MODE")
    try:

        async def worker() -> str:
            # A worker that retries on the package's errors must still stop when cancelled.
            while True:
                try:
                    async with session_factory.begin() as session:
                        await BrandGroupRepository(session).upsert(brand_group())
                except PricingStoreError:
                    continue
                return "returned"

        task = asyncio.create_task(worker())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await holding.rollback()


CALLS: dict[str, Callable[[BrandGroupRepository], Awaitable[object]]] = {
    "upsert": lambda repository: repository.upsert(brand_group()),
    "get_or_create": lambda repository: repository.get_or_create(brand_group()),
    "find": lambda repository: repository.find_by_brand_and_group("Levi's", "jeans"),
    "bulk_upsert": lambda repository: repository.bulk_upsert([brand_group()]),
}


@pytest.mark.parametrize("call", CALLS)
async def test_a_killed_connection_is_sqlalchemys_lost_connection(
    own_engine: AsyncEngine, locker: asyncpg.Connection, call: str
) -> None:
    sessions = create_session_factory(own_engine)
    async with sessions() as session:
        killed = await backend_of(session)
        await locker.execute("SELECT pg_terminate_backend($1)", killed)
        with pytest.raises(DatabaseUnavailableError):
            await CALLS[call](BrandGroupRepository(session))
    # Leaving the block raised nothing; the pool never hands that connection out again.
    for _ in range(3):
        async with sessions() as session:
            assert await backend_of(session) != killed


async def test_a_bulk_upsert_stops_reading_its_input_when_its_connection_dies(
    own_engine: AsyncEngine, locker: asyncpg.Connection
) -> None:
    sessions = create_session_factory(own_engine)
    read = 0
    reached = asyncio.Event()

    def items() -> Iterator[dict[str, object]]:
        nonlocal read
        for number in range(200_000):
            read += 1
            if number == 5_000:
                reached.set()
            yield {"brand": f"Brand {number}", "group_name": "jeans", "base_price": 25}

    async with sessions() as session:
        backend = await backend_of(session)

        async def kill_when_reached() -> None:
            await reached.wait()
            await locker.execute("SELECT pg_terminate_backend($1)", backend)

        killer = asyncio.create_task(kill_when_reached())
        with pytest.raises(DatabaseUnavailableError):
            await BrandGroupRepository(session).bulk_upsert(items(), batch_size=1_000)
        await killer
    assert read < 20_000  # not the 200,000 it was given


@pytest.mark.parametrize("call", ["upsert", "get_or_create", "bulk_upsert"])
async def test_every_write_is_seen_by_the_engines_events(session: AsyncSession, call: str) -> None:
    seen: list[str] = []
    connection = await session.connection()

    def record(conn: object, cursor: object, statement: str, *_: object) -> None:
        seen.append(statement)

    event.listen(connection.sync_connection, "before_cursor_execute", record)
    try:
        await CALLS[call](BrandGroupRepository(session))
    finally:
        event.remove(connection.sync_connection, "before_cursor_execute", record)
    assert any("public.brand_groups" in statement for statement in seen)


async def test_a_lookup_read_past_statement_timeout_is_a_timeout_on_the_same_connection(
    admin_url: URL, locker: asyncpg.Connection
) -> None:
    bounded = create_engine(
        admin_url, connect_args={"server_settings": {"statement_timeout": "300"}}
    )
    try:
        async with PricingLookup(bounded) as lookup:
            await lookup.get("Levi's", "jeans")
            before = await lookup_backends(locker)
            holding = locker.transaction()
            await holding.start()
            await locker.execute("LOCK TABLE public.brand_groups IN ACCESS EXCLUSIVE MODE")
            try:
                started = time.monotonic()
                with pytest.raises(DatabaseTimeoutError, match="statement_timeout"):
                    await lookup.get("Levi's", "jeans")
                took = time.monotonic() - started
            finally:
                await holding.rollback()
            assert took < 0.55  # one statement_timeout, not a second run on a new connection
            assert await lookup_backends(locker) == before  # the connection stayed
            assert await lookup.get("Levi's", "jeans") is None
    finally:
        await bounded.dispose()


async def lookup_backends(connection: asyncpg.Connection) -> set[int]:
    rows = await connection.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'pricing_store lookup' "
        "AND datname = current_database()"
    )
    return {row["pid"] for row in rows}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda repository: repository.get_page(limit=2**63 - 1), r"^limit: must be at most"),
        (lambda repository: repository.get_all(offset=2**63), r"^offset: must be at most"),
        (lambda repository: repository.get_all(limit="10"), r"^limit: must be an integer"),
        (lambda repository: repository.get_page(after="x" * 100), r"^after: is not a cursor"),
        (
            lambda repository: repository.bulk_upsert([], batch_size=10**9),
            r"^batch_size: must be at most",
        ),
    ],
)
async def test_hostile_repository_arguments_get_invalid_value_errors(
    session: AsyncSession,
    call: Callable[[BrandGroupRepository], Awaitable[object]],
    message: str,
) -> None:
    with pytest.raises(InvalidValueError, match=message):
        await call(BrandGroupRepository(session))


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (None, r"^keys: must be an iterable"),
        ("Levi's", r"^keys: must be an iterable"),
        ([("Levi's",)], r"^keys\[0\]: must be a \(brand, group"),
        ((("a", "b") for _ in range(100_001)), r"^keys: must be at most 100000"),
    ],
)
async def test_hostile_key_lists_get_invalid_value_errors(
    engine: AsyncEngine, keys: object, message: str
) -> None:
    async with PricingLookup(engine) as lookup:
        with pytest.raises(InvalidValueError, match=message):
            await lookup.get_many(keys)  # type: ignore[arg-type]


async def test_padded_keys_are_not_kept_and_close_lets_go_of_what_was(engine: AsyncEngine) -> None:
    tracemalloc.start()
    try:
        async with PricingLookup(engine, cache_size=100) as lookup:
            before = tracemalloc.get_traced_memory()[0]
            for number in range(20):
                padding = " " * (1_000_000 + number)  # 1 MB a key, each spelled anew
                await lookup.get(f"{padding}Levi's{padding}", "jeans")
            kept = tracemalloc.get_traced_memory()[0] - before
            assert kept < 2_000_000  # not the 40 MB of keys passed
            for number in range(1_000):
                await lookup.get(f"Brand {number}", "jeans")
            assert lookup.stats().entries == 100
        after_close = tracemalloc.get_traced_memory()[0] - before
        assert after_close < kept + 500_000
        assert lookup.stats().entries == 0
    finally:
        tracemalloc.stop()


async def test_a_lookup_read_past_the_engines_command_timeout_is_one_timeout_error(
    admin_url: URL, locker: asyncpg.Connection
) -> None:
    bounded = create_engine(admin_url, connect_args={"command_timeout": 0.3})
    try:
        async with PricingLookup(bounded) as lookup:
            await lookup.get("Levi's", "jeans")
            holding = locker.transaction()
            await holding.start()
            await locker.execute("LOCK TABLE public.brand_groups IN ACCESS EXCLUSIVE MODE")
            try:
                started = time.monotonic()
                with pytest.raises(DatabaseTimeoutError, match="command_timeout") as raised:
                    await lookup.get("Levi's", "jeans")
                took = time.monotonic() - started
            finally:
                await holding.rollback()
            assert isinstance(raised.value.__cause__, TimeoutError)
            assert took < 0.55  # one command_timeout, not a retry on a fresh connection
            assert await lookup.get("Levi's", "jeans") is None  # and it reads on
    finally:
        await bounded.dispose()


@pytest.fixture
async def limited_role(admin_url: URL, locker: asyncpg.Connection) -> AsyncIterator[str]:
    """A role that may log in but may not read the tables, nor hold any connection."""
    name = f"pricing_faults_{time.monotonic_ns()}"
    await locker.execute(f"CREATE ROLE {name} LOGIN")
    yield name
    await locker.execute(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}'"
    )
    await locker.execute(f"DROP ROLE {name}")


async def test_a_lookup_refused_by_the_server_raises_only_the_packages_errors(
    admin_url: URL, locker: asyncpg.Connection, limited_role: str
) -> None:
    engine = create_engine(admin_url.set(username=limited_role, password=None))
    try:
        async with PricingLookup(engine) as lookup:
            with pytest.raises(PricingStoreError) as denied:  # no SELECT on the tables
                await lookup.get("Levi's", "jeans")
            assert isinstance(denied.value.__cause__, asyncpg.InsufficientPrivilegeError)
            await locker.execute(f"ALTER ROLE {limited_role} CONNECTION LIMIT 0")
            await locker.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE usename = '{limited_role}'"
            )
            with pytest.raises(DatabaseUnavailableError, match="too many connections"):
                await lookup.get("Levi's", "jeans")  # 53300: no connection to be had
    finally:
        await engine.dispose()


async def test_a_repository_refused_by_the_server_raises_only_the_packages_errors(
    admin_url: URL, limited_role: str
) -> None:
    engine = create_engine(admin_url.set(username=limited_role, password=None))
    try:
        async with create_session_factory(engine)() as session:
            with pytest.raises(PricingStoreError) as denied:
                await BrandGroupRepository(session).find_by_brand_and_group("Levi's", "jeans")
        assert str(denied.value).endswith(": permission denied for table brand_groups")
        assert type(denied.value) is PricingStoreError  # none of the more precise ones fits
        assert denied.value.__cause__ is not None
        refusal = driver_error_of(denied.value.__cause__)
        assert isinstance(refusal, asyncpg.InsufficientPrivilegeError)
    finally:
        await engine.dispose()


async def test_an_error_of_the_hosts_own_code_inside_a_repository_call_stays_as_it_is(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    def refuse(state: object) -> None:
        raise LookupError("the host's own listener")

    async with session_factory() as session:
        event.listen(session.sync_session, "do_orm_execute", refuse)
        with pytest.raises(LookupError, match="the host's own listener") as raised:
            await BrandGroupRepository(session).find_by_brand_and_group("Levi's", "jeans")
    assert not isinstance(raised.value, PricingStoreError)
