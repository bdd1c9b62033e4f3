"""A PricingLookup's life, seen from the server: one start, a bounded close, nothing left over.

Every lookup here connects under an application_name of its own, so that its connections
can be counted in pg_stat_activity while other clients (other tests, other runs) use the
same server. The name goes in `connect_args`' `server_settings`: a URL's
`?application_name=` reaches `asyncpg.connect()` as a keyword it does not take.

Each test states its bounds: a close's duration, how soon the server sees a connection go
(polled every 10 ms within a stated bound), how many connections there are at any sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from pricing_store import (
    LookupClosedError,
    PriceReference,
    PricingLookup,
    SchemaNotMigratedError,
    create_engine,
)
from pricing_store.lookup.lifecycle import State
from tests.provision import SilentProxy, asyncpg_dsn

BRANDS = 64
GROUP = "jeans"
# Seconds between two looks at pg_stat_activity while a test watches a lookup work.
SAMPLE_EVERY = 0.002
# Seconds within which the server must have seen a closed connection go.
GONE_WITHIN = 0.5
# Makes the server notice, every 100 ms, a client that closed its connection while its
# backend waits for a lock (otherwise it waits on until the lock is released).
NOTICE_CLOSED_CLIENTS = {"client_connection_check_interval": "100"}
# The listener's statements: its LISTEN, then heartbeats; reads never send these.
LISTENER = "(query LIKE 'LISTEN%' OR query = 'SELECT 1')"
CENSUS_SQL = f"""
    SELECT count(*), count(*) FILTER (WHERE {LISTENER})
    FROM pg_stat_activity WHERE application_name = $1
"""
LISTENERS_SQL = f"SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND {LISTENER}"
WAITING_SQL = """
    SELECT count(*) FROM pg_stat_activity
    WHERE application_name = $1 AND wait_event_type = 'Lock'
"""


def brand(number: int) -> str:
    return f"lifecycle {number:02}"


def price(number: int) -> Decimal:
    return Decimal(10 + number)


@pytest.fixture(scope="module")
async def prices(admin_url: URL) -> AsyncIterator[None]:
    """BRANDS Brand×Groups in the run's database, `brand(n)` priced `price(n)`."""
    connection = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await connection.execute(
            "INSERT INTO public.brand_groups (brand, group_name, base_price) "
            "SELECT 'lifecycle ' || lpad(n::text, 2, '0'), $1, 10 + n "
            "FROM generate_series(0, $2 - 1) AS n",
            GROUP,
            BRANDS,
        )
        yield
    finally:
        await connection.execute("DELETE FROM public.brand_groups WHERE brand LIKE 'lifecycle %'")
        await connection.execute(
            "DELETE FROM public.pricing_store_generation_leases WHERE lease_key LIKE '%lifecycle %'"
        )
        await connection.close()


@pytest.fixture
def name() -> str:
    """The application_name of the test's lookup, and of nothing else on the server."""
    return f"lifecycle_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def admin(admin_url: URL) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, to look at pg_stat_activity and end backends."""
    connection = await asyncpg.connect(asyncpg_dsn(admin_url))
    yield connection
    await connection.close()


@pytest.fixture
async def locker(admin_url: URL) -> AsyncIterator[asyncpg.Connection]:
    """A connection holding an ACCESS EXCLUSIVE lock on brand_groups until the test ends."""
    connection = await asyncpg.connect(asyncpg_dsn(admin_url))
    holding = connection.transaction()
    await holding.start()
    await connection.execute("LOCK TABLE public.brand_groups IN ACCESS EXCLUSIVE MODE")
    yield connection
    await holding.rollback()
    await connection.close()


@pytest.fixture
async def tcp_url(admin_url: URL) -> AsyncIterator[URL]:
    """The run's database on TCP, where a SilentProxy can stand in front of it.

    A server on a Unix socket alone (the embedded one) is reached through a forwarder of
    its socket: the same server, the same data, the same backends to count.
    """
    socket_directory = admin_url.query.get("host")
    if admin_url.host and not socket_directory:
        yield admin_url
        return
    async with SilentProxy(str(socket_directory), admin_url.port or 5432) as forwarder:
        yield admin_url.difference_update_query(["host"]).set(host="127.0.0.1", port=forwarder.port)


def named_engine(url: URL, name: str, **settings: str) -> AsyncEngine:
    """An engine whose connections, the lookup's included, are named `name` on the server."""
    return create_engine(
        url, connect_args={"server_settings": {"application_name": name, **settings}}
    )


class Connects:
    """How many connections an engine's lookups opened (SQLAlchemy's connect event)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.count = 0
        event.listen(engine.sync_engine, "connect", self._made)

    def _made(self, connection: Any, record: Any) -> None:
        self.count += 1


@contextlib.asynccontextmanager
async def silent_proxy(url: URL) -> AsyncIterator[SilentProxy]:
    """A SilentProxy in front of `url`'s server, left forwarding so what it holds can end."""
    async with SilentProxy(str(url.host), int(url.port or 5432)) as proxy:
        try:
            yield proxy
        finally:
            proxy.resume()


async def backends(admin: asyncpg.Connection, name: str) -> int:
    count: int = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name
    )
    return count


async def within(seconds: float, check: Callable[[], Awaitable[bool]], what: str) -> float:
    """Seconds until `check()` holds, polled every 10 ms; fails past `seconds`."""
    started = time.monotonic()
    while not await check():
        waited = time.monotonic() - started
        assert waited < seconds, f"{what}: not within {seconds} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def all_gone(admin: asyncpg.Connection, name: str) -> None:
    """Every backend named `name` ends within GONE_WITHIN seconds."""

    async def none_left() -> bool:
        return await backends(admin, name) == 0

    await within(GONE_WITHIN, none_left, f"connections of {name} left on the server")


@dataclass
class Census:
    """The most connections of one lookup seen in any one sample of pg_stat_activity."""

    most: int = 0
    most_listening: int = 0
    samples: int = 0


@contextlib.asynccontextmanager
async def census(url: URL, name: str) -> AsyncIterator[Census]:
    """Sample the backends named `name` every SAMPLE_EVERY seconds, on a connection of its own.

    The first sample is taken before the block runs, the last one after it.
    """
    seen = Census()
    connection = await asyncpg.connect(asyncpg_dsn(url))
    stop = asyncio.Event()

    async def look() -> None:
        total, listening = await connection.fetchrow(CENSUS_SQL, name)
        seen.most, seen.most_listening = max(seen.most, total), max(seen.most_listening, listening)
        seen.samples += 1

    async def sample() -> None:
        while not stop.is_set():
            await look()
            await asyncio.sleep(SAMPLE_EVERY)
        await look()

    await look()
    sampling = asyncio.get_running_loop().create_task(sample())
    try:
        yield seen
    finally:
        stop.set()
        await sampling
        await connection.close()


async def until_waiting_for_the_lock(admin: asyncpg.Connection, name: str, reads: int) -> None:
    """Until `reads` of the lookup's statements wait for the locker's lock (1 s at most)."""

    async def waiting() -> bool:
        return bool(await admin.fetchval(WAITING_SQL, name) == reads)

    await within(1.0, waiting, f"{reads} reads waiting for the lock")


def state_of(lookup: PricingLookup) -> State:
    """The lookup's state now (a function, so that a type checker does not fix it)."""
    return lookup.state


def listening_anew(
    lookup: PricingLookup, admin: asyncpg.Connection, name: str, killed: int
) -> Callable[[], Awaitable[bool]]:
    """Whether the lookup listens again, on a backend other than `killed`."""

    async def check() -> bool:
        pids = {row["pid"] for row in await admin.fetch(LISTENERS_SQL, name)}
        return lookup.stats().listening and bool(pids - {killed})

    return check


def base_price(reference: PriceReference | None) -> Decimal:
    assert reference is not None
    return reference.base_price


def closed_by_close(tasks: list[asyncio.Task[Any]]) -> None:
    """Each task ended with LookupClosedError: not cancelled, not a driver's error."""
    for task in tasks:
        assert task.done()
        assert not task.cancelled(), "a call cut short by close() was cancelled"
        assert type(task.exception()) is LookupClosedError, repr(task.exception())


async def test_close_returns_within_a_second_past_close_timeout_when_the_listener_went_silent(
    tcp_url: URL, admin: asyncpg.Connection, name: str, prices: None
) -> None:
    direct = named_engine(tcp_url, name)
    async with silent_proxy(tcp_url) as proxy:
        proxied = named_engine(tcp_url.set(port=proxy.port), name)
        try:
            lookup = PricingLookup(direct, cache_size=100, listen_to=proxied, close_timeout=1.0)
            assert base_price(await lookup.get(brand(1), GROUP)) == price(1)
            assert await backends(admin, name) == 2  # the listener (proxied) and one read

            proxy.pause()  # the listening connection goes silent; nothing is closed
            started = time.monotonic()
            await lookup.close()
            took = time.monotonic() - started

            assert took < 2.0  # close_timeout plus a second
            assert lookup.state is State.CLOSED

            async def only_the_silent_one_left() -> bool:
                return await backends(admin, name) <= 1

            # The direct read connection is gone at once.
            await within(GONE_WITHIN, only_the_silent_one_left, "the read connection left")
            # The server cannot tell a silent client from a slow one: the listener's backend
            # lives on behind the paused proxy. Once the path carries traffic again it sees
            # the lookup's side closed, and nothing of the lookup remains.
            proxy.resume()
            await all_gone(admin, name)
        finally:
            await proxied.dispose()
            await direct.dispose()


async def test_close_cuts_reads_waiting_for_a_lock_after_close_timeout_with_lookup_closed_error(
    admin_url: URL,
    admin: asyncpg.Connection,
    locker: asyncpg.Connection,
    name: str,
    prices: None,
) -> None:
    engine = named_engine(admin_url, name, **NOTICE_CLOSED_CLIENTS)
    try:
        lookup = PricingLookup(engine, pool_size=3, close_timeout=0.5)
        reads = [
            asyncio.get_running_loop().create_task(lookup.get(brand(number), GROUP))
            for number in range(3)
        ]
        await until_waiting_for_the_lock(admin, name, 3)

        started = time.monotonic()
        await lookup.close()
        assert time.monotonic() - started < 1.5  # close_timeout plus a second
        await asyncio.wait(reads, timeout=max(0.0, started + 1.5 - time.monotonic()))
        closed_by_close(reads)
        await all_gone(admin, name)  # the lock still held
    finally:
        await engine.dispose()


async def test_a_read_blocked_on_a_lock_leaves_the_server_within_a_second_of_close(
    admin_url: URL, admin: asyncpg.Connection, locker: asyncpg.Connection, name: str, prices: None
) -> None:
    """No interval of the test's own: the lookup sets the server's check of closed clients."""
    engine = named_engine(admin_url, name)
    try:
        lookup = PricingLookup(engine, pool_size=1, close_timeout=0.1)
        read = asyncio.get_running_loop().create_task(lookup.get(brand(1), GROUP))
        await until_waiting_for_the_lock(admin, name, 1)
        await lookup.close()
        closed_by_close([read])

        async def none_left() -> bool:
            return await backends(admin, name) == 0

        # The server's check runs every second, then the backend exits: the lock still held.
        await within(1.0 + GONE_WITHIN, none_left, f"the blocked backend of {name} stayed")
    finally:
        await engine.dispose()


async def test_close_cuts_reads_on_a_silent_network_after_close_timeout_with_lookup_closed_error(
    tcp_url: URL, admin: asyncpg.Connection, name: str, prices: None
) -> None:
    async with silent_proxy(tcp_url) as proxy:
        engine = named_engine(tcp_url.set(port=proxy.port), name)
        try:
            lookup = PricingLookup(engine, pool_size=3, close_timeout=0.5)
            # Three reads at once open three connections, which the reads below reuse.
            await asyncio.gather(*(lookup.get(brand(number), GROUP) for number in range(3)))
            assert await backends(admin, name) == 3

            proxy.pause()  # half-open: every connection goes silent, none is closed
            reads = [
                asyncio.get_running_loop().create_task(lookup.get(brand(number), GROUP))
                for number in range(3)
            ]
            await asyncio.sleep(0.1)
            assert not any(read.done() for read in reads)

            started = time.monotonic()
            await lookup.close()
            assert time.monotonic() - started < 1.5  # close_timeout plus a second
            await asyncio.wait(reads, timeout=max(0.0, started + 1.5 - time.monotonic()))
            closed_by_close(reads)

            proxy.resume()  # the server hears of the closed connections only now
            await all_gone(admin, name)
        finally:
            await engine.dispose()


async def test_close_cuts_a_read_still_opening_its_connection_on_a_silent_network(
    tcp_url: URL, admin: asyncpg.Connection, name: str, prices: None
) -> None:
    async with silent_proxy(tcp_url) as proxy:
        engine = named_engine(tcp_url.set(port=proxy.port), name)
        lookup = PricingLookup(engine, pool_size=2, close_timeout=0.5)
        proxy.pause()  # before the first read: its connection cannot be opened
        read = asyncio.get_running_loop().create_task(lookup.get(brand(1), GROUP))
        try:
            await asyncio.sleep(0.1)
            started = time.monotonic()
            await lookup.close()
            assert time.monotonic() - started < 1.5
            await asyncio.wait([read], timeout=max(0.0, started + 1.5 - time.monotonic()))
            assert read.done(), "the read was still under way after close() returned"
            closed_by_close([read])
        finally:
            proxy.resume()
            await asyncio.wait([read], timeout=2.0)
            if read.done() and not read.cancelled():
                read.exception()  # retrieved: whatever it was, the test has said so above
            await engine.dispose()
            await all_gone(admin, name)


async def test_a_read_cancelled_while_its_connection_opens_leaves_no_connection_behind(
    tcp_url: URL, admin: asyncpg.Connection, name: str, prices: None
) -> None:
    async with silent_proxy(tcp_url) as proxy:
        engine = named_engine(tcp_url.set(port=proxy.port), name)
        lookup = PricingLookup(engine, pool_size=2)
        try:
            proxy.pause()  # the read's connection cannot be opened yet
            read = asyncio.get_running_loop().create_task(lookup.get(brand(1), GROUP))
            await asyncio.sleep(0.1)
            read.cancel()
            await asyncio.wait([read], timeout=0.5)
            assert read.cancelled()  # the caller's own cancellation, as asyncio gives it
            proxy.resume()  # the server may now finish what the connect had begun
            await asyncio.sleep(0.3)
            assert await backends(admin, name) == 0, "the abandoned connect left a connection"
            assert base_price(await lookup.get(brand(1), GROUP)) == price(1)  # still serves
        finally:
            proxy.resume()
            await lookup.close()
            await engine.dispose()
            await all_gone(admin, name)


async def test_a_caller_that_gives_up_on_close_gets_its_timeout_and_a_later_close_completes(
    admin_url: URL,
    admin: asyncpg.Connection,
    locker: asyncpg.Connection,
    name: str,
    prices: None,
) -> None:
    engine = named_engine(admin_url, name, **NOTICE_CLOSED_CLIENTS)
    try:
        lookup = PricingLookup(engine, close_timeout=1.0)
        read = asyncio.get_running_loop().create_task(lookup.get(brand(1), GROUP))
        await until_waiting_for_the_lock(admin, name, 1)

        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await lookup.close()
        assert time.monotonic() - started < 0.3  # the caller's own timeout, not the close's
        assert lookup.state is State.CLOSING  # the close goes on without the caller

        await lookup.close()
        assert time.monotonic() - started < 2.0  # close_timeout plus a second, from the first
        assert state_of(lookup) is State.CLOSED
        assert read.done()
        closed_by_close([read])
        await all_gone(admin, name)  # the lock still held
    finally:
        await engine.dispose()


async def test_a_close_called_from_a_cancelled_task_still_ends_the_lookup(
    admin_url: URL,
    admin: asyncpg.Connection,
    locker: asyncpg.Connection,
    name: str,
    prices: None,
) -> None:
    engine = named_engine(admin_url, name, **NOTICE_CLOSED_CLIENTS)
    try:
        lookup = PricingLookup(engine, close_timeout=0.5)
        read = asyncio.get_running_loop().create_task(lookup.get(brand(1), GROUP))
        await until_waiting_for_the_lock(admin, name, 1)

        started = time.monotonic()
        closing = asyncio.get_running_loop().create_task(lookup.close())
        await asyncio.sleep(0.05)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing  # the cancellation reaches the task it was aimed at
        assert time.monotonic() - started < 0.3

        await asyncio.wait([read], timeout=max(0.0, started + 1.5 - time.monotonic()))
        closed_by_close([read])  # the close went on, and cut the read at close_timeout
        await lookup.close()
        assert time.monotonic() - started < 1.5
        await all_gone(admin, name)
    finally:
        await engine.dispose()


async def test_sixty_four_first_gets_at_once_share_one_start_and_hold_at_most_three_connections(
    admin_url: URL, admin: asyncpg.Connection, name: str, prices: None
) -> None:
    engine = named_engine(admin_url, name)
    connects = Connects(engine)
    try:
        lookup = PricingLookup(engine, cache_size=100, pool_size=2)
        async with census(admin_url, name) as seen:
            found = await asyncio.gather(
                *(lookup.get(brand(number), GROUP) for number in range(BRANDS))
            )

        assert [base_price(reference) for reference in found] == [
            price(number) for number in range(BRANDS)
        ]
        assert lookup.state is State.OPEN
        # One start (its schema check, closed before the listener connects), one listener,
        # and pool_size connections for the reads.
        assert connects.count == 4
        assert seen.samples >= 2  # before and after; in between as often as it could
        assert seen.most <= 3, f"{seen.most} connections at once"
        assert seen.most_listening <= 1
        assert await backends(admin, name) == 3

        await lookup.close()
        await all_gone(admin, name)
    finally:
        await engine.dispose()


async def test_sixty_four_starts_at_once_are_one_start_with_one_listener(
    admin_url: URL, admin: asyncpg.Connection, name: str
) -> None:
    engine = named_engine(admin_url, name)
    connects = Connects(engine)
    try:
        lookup = PricingLookup(engine, cache_size=100)
        async with census(admin_url, name) as seen:
            await asyncio.gather(*(lookup.start() for _ in range(BRANDS)))

        assert lookup.state is State.OPEN
        assert lookup.stats().listening
        assert connects.count == 2  # one schema check, one listener
        assert seen.most_listening <= 1
        # The schema check's connection is closed, and gone from the server, before the
        # listener connects.
        assert seen.most <= 1
        # Heartbeats start a fifth of listen_timeout (5 s) after the LISTEN: it is still the
        # listener's last statement.
        assert (
            await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = $1 AND query LIKE 'LISTEN%'",
                name,
            )
            == 1
        )
        assert await backends(admin, name) == 1

        await lookup.close()
        await all_gone(admin, name)
    finally:
        await engine.dispose()


class NoGenerations:
    """A generator for a lookup that must never call it."""

    async def brand_group(self, brand: str, group: str) -> Mapping[str, object]:
        raise AssertionError("a closed lookup generated a Brand×Group")

    async def model(self, brand: str, group: str, model: str) -> Mapping[str, object]:
        raise AssertionError("a closed lookup generated a model")


async def test_every_call_on_a_closed_lookup_raises_lookup_closed_error_and_connects_nowhere(
    admin_url: URL, admin: asyncpg.Connection, name: str, prices: None
) -> None:
    engine = named_engine(admin_url, name)
    connects = Connects(engine)
    try:
        lookup = PricingLookup(engine, cache_size=10, generator=NoGenerations())
        assert base_price(await lookup.get(brand(1), GROUP)) == price(1)
        assert base_price(await lookup.get(brand(1), GROUP)) == price(1)
        assert lookup.stats().hits == 1  # cached: a closed lookup must not answer from it
        await lookup.close()
        await all_gone(admin, name)
        opened = connects.count

        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: lookup.get(brand(1), GROUP),  # cached while open
            lambda: lookup.get(brand(2), GROUP),
            lambda: lookup.get(brand(3), GROUP, "501"),
            lambda: lookup.get_many([(brand(1), GROUP)]),
            lambda: lookup.get_many([(brand(4), GROUP), (brand(5), GROUP, None)]),
            lambda: lookup.get_or_generate(brand(1), GROUP),
            lambda: lookup.get_or_generate("lifecycle unknown", GROUP, "501"),
            lookup.start,
            lookup.__aenter__,
        ]
        for number, call in enumerate(calls):
            with pytest.raises(LookupClosedError):
                await call()
            assert connects.count == opened, f"call {number} connected"
            assert await backends(admin, name) == 0

        started = time.monotonic()
        await lookup.close()
        assert time.monotonic() - started < 0.05  # at once
        assert lookup.state is State.CLOSED
    finally:
        await engine.dispose()


async def test_a_listener_killed_five_times_is_back_within_a_second_and_never_doubled(
    admin_url: URL, admin: asyncpg.Connection, name: str
) -> None:
    engine = named_engine(admin_url, name)
    try:
        lookup = PricingLookup(engine, cache_size=100, listen_timeout=0.5)
        async with census(admin_url, name) as seen:
            await lookup.start()
            for _ in range(5):
                listening = [row["pid"] for row in await admin.fetch(LISTENERS_SQL, name)]
                assert len(listening) == 1
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", listening[0])

                await within(1.0, listening_anew(lookup, admin, name, listening[0]), "back")

        # No reads: every backend of the lookup was its listener's.
        assert seen.samples > 10
        assert seen.most_listening <= 1, f"{seen.most_listening} listeners at once"
        assert seen.most <= 1, f"{seen.most} connections at once"

        await lookup.close()
        await all_gone(admin, name)
    finally:
        await engine.dispose()


async def test_a_start_that_fails_leaves_no_connection_and_the_next_start_tries_again(
    empty_database: URL, admin: asyncpg.Connection, name: str
) -> None:
    engine = named_engine(empty_database, name)
    connects = Connects(engine)
    try:
        lookup = PricingLookup(engine, cache_size=10)
        for attempt in (1, 2):
            started = time.monotonic()
            with pytest.raises(SchemaNotMigratedError):
                async with asyncio.timeout(2.0):
                    await lookup.start()
            assert time.monotonic() - started < 2.0
            assert lookup.state is State.NEW
            assert connects.count == attempt  # a fresh schema check each time
            await all_gone(admin, name)

        with pytest.raises(SchemaNotMigratedError):
            await lookup.get(brand(1), GROUP)  # a first call starts afresh too
        assert connects.count == 3
        await lookup.close()
        await all_gone(admin, name)
    finally:
        await engine.dispose()


async def test_a_first_caller_that_is_cancelled_leaves_the_shared_start_to_the_others(
    tcp_url: URL, admin: asyncpg.Connection, name: str, prices: None
) -> None:
    async with silent_proxy(tcp_url) as proxy:
        engine = named_engine(tcp_url.set(port=proxy.port), name)
        try:
            lookup = PricingLookup(engine, cache_size=100)
            proxy.pause()  # the start cannot finish until the network carries traffic
            loop = asyncio.get_running_loop()
            callers = [loop.create_task(lookup.get(brand(number), GROUP)) for number in range(4)]
            starter = loop.create_task(lookup.start())
            await asyncio.sleep(0.1)
            assert lookup.state is State.STARTING

            callers[0].cancel()
            await asyncio.wait([callers[0]], timeout=0.1)
            assert callers[0].cancelled()  # its cancellation reached it
            await asyncio.sleep(0.05)
            assert lookup.state is State.STARTING  # and not the start

            proxy.resume()
            async with asyncio.timeout(2.0):
                found = await asyncio.gather(*callers[1:])
                await starter
            assert [base_price(reference) for reference in found] == [price(n) for n in (1, 2, 3)]
            assert state_of(lookup) is State.OPEN
            assert lookup.stats().listening

            await lookup.close()
            await all_gone(admin, name)
        finally:
            await engine.dispose()


async def test_a_close_during_a_start_stuck_on_a_silent_network_ends_its_callers(
    tcp_url: URL, admin: asyncpg.Connection, name: str
) -> None:
    async with silent_proxy(tcp_url) as proxy:
        engine = named_engine(tcp_url.set(port=proxy.port), name)
        try:
            lookup = PricingLookup(engine, cache_size=100, close_timeout=0.5)
            proxy.pause()
            loop = asyncio.get_running_loop()
            callers = [loop.create_task(lookup.get(brand(number), GROUP)) for number in range(3)]
            callers.append(loop.create_task(lookup.start()))
            await asyncio.sleep(0.1)
            assert lookup.state is State.STARTING

            started = time.monotonic()
            await lookup.close()
            assert time.monotonic() - started < 1.5
            await asyncio.wait(callers, timeout=max(0.0, started + 1.5 - time.monotonic()))
            closed_by_close(callers)
            assert state_of(lookup) is State.CLOSED

            proxy.resume()
            await all_gone(admin, name)
        finally:
            await engine.dispose()


class OneStuckGeneration:
    """Generates `lifecycle fast` at once; `lifecycle slow` never comes back."""

    def __init__(self) -> None:
        self.stuck = asyncio.Event()

    async def brand_group(self, brand: str, group: str) -> Mapping[str, object]:
        if brand == "lifecycle slow":
            self.stuck.set()
            await asyncio.Event().wait()
        return {"base_price": 25}

    async def model(self, brand: str, group: str, model: str) -> Mapping[str, object]:
        return {}


async def test_close_with_a_generation_under_way_on_a_silent_network_returns_within_bound(
    tcp_url: URL,
    admin_url: URL,
    admin: asyncpg.Connection,
    name: str,
    prices: None,
) -> None:
    generator = OneStuckGeneration()
    async with silent_proxy(tcp_url) as proxy:
        engine = named_engine(tcp_url.set(port=proxy.port), name)
        lookup = PricingLookup(engine, generator=generator, close_timeout=0.5)
        loop = asyncio.get_running_loop()
        locker = await asyncpg.connect(asyncpg_dsn(admin_url))
        try:
            # Both claims wait for this lock, so each holds a lease connection of its own.
            holding = locker.transaction()
            await holding.start()
            await locker.execute(
                "LOCK TABLE public.pricing_store_generation_leases IN ACCESS EXCLUSIVE MODE"
            )
            fast = loop.create_task(lookup.get_or_generate("lifecycle fast", GROUP))
            slow = loop.create_task(lookup.get_or_generate("lifecycle slow", GROUP))
            await until_waiting_for_the_lock(admin, name, 2)
            await holding.rollback()
            assert base_price(await fast) == Decimal(25)
            async with asyncio.timeout(2.0):
                await generator.stuck.wait()

            proxy.pause()
            started = time.monotonic()
            await lookup.close()
            took = time.monotonic() - started
            await asyncio.wait([slow], timeout=2.0)
            closed_by_close([slow])
            assert took < 1.5, f"close took {took:.2f} s with close_timeout 0.5"
        finally:
            await locker.close()
            proxy.resume()
            await lookup.close()
            await engine.dispose()
    await all_gone(admin, name)


class CountedLlm:
    """A generator that records what it was asked; a "slow" brand takes a second."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def brand_group(self, brand: str, group: str) -> Mapping[str, object]:
        self.asked.append(brand)
        if "slow" in brand:
            await asyncio.sleep(1.0)
        return {"base_price": "25.00"}

    async def model(self, brand: str, group: str, model: str) -> Mapping[str, object]:
        self.asked.append(model)
        return {"coefficient": "1.50"}


async def test_a_call_under_way_when_close_begins_starts_no_generation(
    admin_url: URL, admin: asyncpg.Connection, name: str, prices: None
) -> None:
    engine = named_engine(admin_url, name)
    llm = CountedLlm()
    lookup = PricingLookup(engine, generator=llm, close_timeout=2.0)
    lock = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await lookup.start()
        # A generation under way keeps close() waiting for it (close_timeout) ...
        slow = asyncio.get_running_loop().create_task(
            lookup.get_or_generate("lifecycle slow brand", GROUP)
        )
        await asyncio.sleep(0.2)
        assert llm.asked == ["lifecycle slow brand"]
        holding = lock.transaction()
        await holding.start()
        await lock.execute("LOCK TABLE public.brand_groups IN ACCESS EXCLUSIVE MODE")
        asking = asyncio.get_running_loop().create_task(
            lookup.get_or_generate("lifecycle new brand", GROUP)
        )
        await until_waiting_for_the_lock(admin, name, 1)
        closing = asyncio.get_running_loop().create_task(lookup.close())
        await asyncio.sleep(0.1)
        await holding.rollback()  # ... while this read finishes: a miss
        await asyncio.wait([asking], timeout=0.5)
        assert asking.done()
        assert isinstance(asking.exception(), LookupClosedError)
        assert llm.asked == ["lifecycle slow brand"]  # no LLM call begun while closing
        await asyncio.wait([slow], timeout=1.5)
        assert slow.done()
        assert not slow.cancelled()
        assert slow.exception() is None  # the generation under way was let finish
        await asyncio.wait([closing], timeout=1.0)
        assert closing.done()
        assert not [
            task
            for task in asyncio.all_tasks()
            if "Generations._generate" in repr(task.get_coro()) and not task.done()
        ]
    finally:
        await lock.close()
        await lookup.close()
        await engine.dispose()


async def test_a_generation_waiting_for_its_turn_when_close_begins_calls_no_generator(
    admin_url: URL, name: str, prices: None
) -> None:
    engine = named_engine(admin_url, name)
    llm = CountedLlm()
    lookup = PricingLookup(engine, generator=llm, max_generations=1, close_timeout=3.0)
    try:
        await lookup.start()
        first = asyncio.get_running_loop().create_task(
            lookup.get_or_generate("lifecycle slow first", GROUP)
        )
        await asyncio.sleep(0.2)  # generating, and holding the one turn
        waiting = asyncio.get_running_loop().create_task(
            lookup.get_or_generate("lifecycle queued second", GROUP)
        )
        await asyncio.sleep(0.2)  # waiting for the turn
        started = time.monotonic()
        await lookup.close()
        assert time.monotonic() - started < 3.0 + 1.0
        assert llm.asked == ["lifecycle slow first"]  # the queued one never reached the LLM
        assert first.done()
        assert first.exception() is None  # the generation under way was let finish
        closed_by_close([waiting])
    finally:
        await lookup.close()
        await engine.dispose()
