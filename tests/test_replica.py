"""Reading from a real streaming standby: a lagging standby's values are never cached.

The bounds: a committed change is heard within HEARD_WITHIN on loopback; a standby catches
up within REPLAY_WITHIN (replication's pace, not the lookup's); and once the standby has
replayed up to the primary's position, the lookup serves the fresh value within
HEARD_WITHIN and caches it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL

from pricing_store import PricingLookup, PricingStoreError, create_engine
from pricing_store.lookup import cache as cache_module
from pricing_store.lookup.cache import ReferenceCache
from pricing_store.lookup.replay import (
    GET_ON_STANDBY_SQL,
    POSITION_SQL,
    POSITION_UNKNOWN,
    ReplayPositions,
)
from tests.helpers import Counted, eventually
from tests.provision import DelayingProxy, OwnServer, Standby, asyncpg_dsn, free_port

# A committed change is heard this soon on loopback (a proxy's delay included).
HEARD_WITHIN = 0.5
# A streaming standby on loopback replays what the primary wrote this soon.
REPLAY_WITHIN = 10.0
# Each way, in front of listen_to: a position query's round trip takes 0.4 s more.
PROXY_DELAY = 0.2


@pytest.fixture
async def primary_url(own_server: OwnServer, own_database: URL) -> URL:
    """The own server, migrated, on TCP too (a proxy can stand in front of it)."""
    own_server.stop()
    port = free_port()
    own_server.start(tcp_port=port)
    return own_database.set(host="127.0.0.1", port=port, query={})


@pytest.fixture
async def primary(primary_url: URL) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the primary, where the changes are made."""
    connection = await asyncpg.connect(asyncpg_dsn(primary_url))
    await connection.execute(
        "INSERT INTO public.brand_groups (brand, group_name, base_price) "
        "VALUES ('Levi''s', 'jeans', 25), ('Nike', 'sneakers', 60)"
    )
    yield connection
    await connection.close()


@pytest.fixture
def standby(
    own_server: OwnServer, tmp_path: Path, primary: asyncpg.Connection
) -> Iterator[Standby]:
    """A streaming standby started from the own server with `pg_basebackup -R`."""
    replica = own_server.standby(tmp_path, tcp_port=free_port())
    yield replica
    replica.close()


@pytest.fixture
async def on_standby(standby: Standby) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the standby, to watch and pause its replay."""
    connection = await asyncpg.connect(asyncpg_dsn(standby.url))
    assert await connection.fetchval("SELECT pg_is_in_recovery()")
    yield connection
    await connection.close()


async def replayed_up_to_now(primary: asyncpg.Connection, on_standby: asyncpg.Connection) -> None:
    """Until the standby has replayed up to the primary's position as of now."""
    position = await primary.fetchval("SELECT pg_current_wal_lsn()")

    async def caught_up() -> bool:
        replayed = await on_standby.fetchval("SELECT pg_last_wal_replay_lsn()")
        return bool(replayed >= position)

    await eventually(caught_up, within=REPLAY_WITHIN)


async def replay_paused(on_standby: asyncpg.Connection) -> None:
    """Pause the standby's replay: from now on it applies nothing more until resumed."""
    await on_standby.execute("SELECT pg_wal_replay_pause()")
    # A pause requested stops replay before the next record, as a paused one does.
    assert await on_standby.fetchval("SELECT pg_get_wal_replay_pause_state()") != "not paused"


async def heard(lookup: PricingLookup, notifications: int) -> None:
    """Until the lookup has heard this many notifications in all (HEARD_WITHIN at most)."""

    async def enough() -> bool:
        return lookup.stats().notifications >= notifications

    assert await eventually(enough, HEARD_WITHIN) < HEARD_WITHIN


async def sent(lookup: Counted) -> int:
    await asyncio.sleep(0)
    return len(lookup.sent)


async def base_price(lookup: PricingLookup, brand: str, group: str = "jeans") -> Decimal | None:
    reference = await lookup.get(brand, group)
    return None if reference is None else reference.base_price


async def test_a_lagging_standby_is_served_but_not_cached(
    primary_url: URL, on_standby: asyncpg.Connection, standby: Standby, primary: asyncpg.Connection
) -> None:
    await replayed_up_to_now(primary, on_standby)
    primary_engine, standby_engine = create_engine(primary_url), create_engine(standby.url)
    try:
        async with Counted(standby_engine, listen_to=primary_engine, cache_size=100) as lookup:
            lookup.sent = []
            # Past the position the lookup noted at start (the primary's WAL moves on its own).
            await replayed_up_to_now(primary, on_standby)

            async def price(brand: str) -> Decimal | None:
                return await base_price(lookup, brand, "jeans" if brand == "Levi's" else "sneakers")

            assert await price("Levi's") == Decimal("25.00")
            assert await price("Levi's") == Decimal("25.00")
            assert await sent(lookup) == 1  # cached: the standby had replayed every change

            await replay_paused(on_standby)
            await primary.execute("UPDATE public.brand_groups SET base_price = 30")
            await heard(lookup, 1)

            # The standby still has the old row: served as it is, never cached.
            for _ in range(3):
                assert await price("Levi's") == Decimal("25.00")
            many = await lookup.get_many([("Nike", "sneakers"), ("Zara", "dresses")])
            nike = many[("Nike", "sneakers")]
            assert nike is not None
            assert nike.base_price == Decimal("60.00")
            assert lookup.stats().entries == 1  # only Zara's absence: no change was notified to it
            reads_while_lagging = await sent(lookup)
            assert reads_while_lagging == 5

            await on_standby.execute("SELECT pg_wal_replay_resume()")
            await replayed_up_to_now(primary, on_standby)

            async def fresh() -> bool:
                return await price("Levi's") == Decimal("30.00")

            assert await eventually(fresh, HEARD_WITHIN) < HEARD_WITHIN

            async def cached_again() -> bool:
                before = await sent(lookup)
                assert await price("Levi's") == Decimal("30.00")
                return await sent(lookup) == before

            assert await eventually(cached_again, HEARD_WITHIN) < HEARD_WITHIN
    finally:
        await primary_engine.dispose()
        await standby_engine.dispose()


class EachStatementElsewhere:
    """Real connections taking a client's statements in turn, each the next one's: what a
    proxy does that sends each statement wherever it likes (PgBouncer rotating hosts)."""

    def __init__(self, *servers: asyncpg.Connection) -> None:
        self.servers = servers
        self.sent: list[tuple[int, str]] = []

    def next(self, sql: str) -> asyncpg.Connection:
        server = len(self.sent) % len(self.servers)
        self.sent.append((server, sql))
        return self.servers[server]

    async def fetchrow(self, sql: str, *arguments: object) -> asyncpg.Record | None:
        return await self.next(sql).fetchrow(sql, *arguments)

    async def fetch(self, sql: str, *arguments: object) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.next(sql).fetch(sql, *arguments)
        return rows


async def test_a_standby_read_knows_how_far_it_replayed_before_it_took_its_snapshot(
    primary: asyncpg.Connection, on_standby: asyncpg.Connection
) -> None:
    async def change_and_replay(price: int) -> int:
        await primary.execute(
            "UPDATE public.brand_groups SET base_price = $1 WHERE brand = 'Nike'", price
        )
        position: int = await primary.fetchval("SELECT pg_current_wal_lsn()")
        await replayed_up_to_now(primary, on_standby)
        return position

    needed = [await change_and_replay(61)]
    positions, one_server = ReplayPositions(), EachStatementElsewhere(on_standby)
    read = positions.reader(lambda position: position is not None and position >= needed[0])
    replayed, rows = await read(one_server, GET_ON_STANDBY_SQL, "Levi's", "jeans", None)
    # A new connection asks first, in a statement of its own: its snapshot comes after.
    assert one_server.sent == [(0, POSITION_SQL), (0, GET_ON_STANDBY_SQL)]
    assert replayed is not None
    assert replayed >= needed[0]
    assert [row["base_price"] for row in rows] == [Decimal("25.00")]

    # The next read uses the position its predecessor ended at, before the change replayed
    # since: its own snapshot includes at least that.
    replayed_since = await change_and_replay(62)
    again, missing = await read(one_server, GET_ON_STANDBY_SQL, "Zara", "dresses", None)
    assert one_server.sent[2:] == [(0, GET_ON_STANDBY_SQL)]
    assert again is not None
    assert replayed <= again < replayed_since
    assert missing == []  # no match: no row, the position all the same

    # A Brand×Group that needs more than the last position known asks again first.
    needed[0] = await change_and_replay(63)
    latest, nike = await read(one_server, GET_ON_STANDBY_SQL, "Nike", "sneakers", None)
    assert one_server.sent[3:] == [(0, POSITION_SQL), (0, GET_ON_STANDBY_SQL)]
    assert latest is not None
    assert latest >= needed[0]
    assert [row["base_price"] for row in nike] == [Decimal("63.00")]

    # A Brand×Group no position can place yet (its change's position is still on its way
    # from the primary) is not cached whatever the standby says: nothing is asked.
    unplaced = positions.reader(lambda position: False)
    await unplaced(one_server, GET_ON_STANDBY_SQL, "Nike", "sneakers", None)
    assert one_server.sent[5:] == [(0, GET_ON_STANDBY_SQL)]


@pytest.mark.parametrize("order", ["primary first", "standby first"])
async def test_a_position_and_a_read_answered_by_two_servers_are_never_cached(
    primary: asyncpg.Connection, on_standby: asyncpg.Connection, order: str
) -> None:
    await replayed_up_to_now(primary, on_standby)
    servers = (primary, on_standby) if order == "primary first" else (on_standby, primary)
    split = EachStatementElsewhere(*servers)
    read = ReplayPositions().reader(lambda position: True)
    for _ in range(2):  # asked first, then known from the read before
        replayed, rows = await read(split, GET_ON_STANDBY_SQL, "Levi's", "jeans", None)
        assert replayed == POSITION_UNKNOWN
        assert len(rows) == 1
    assert [server for server, _ in split.sent] == [0, 1, 0]
    cache = ReferenceCache(10, tracks_positions=True)
    cache.back(0, 0)  # listening, and nothing needed: any position would do
    key = ("Levi's", "jeans", None)
    assert not cache.put(key, key, rows[0], cache.token(key), replayed)


async def test_a_missing_key_is_not_cached_as_missing_while_the_standby_lags(
    primary_url: URL, on_standby: asyncpg.Connection, standby: Standby, primary: asyncpg.Connection
) -> None:
    await replayed_up_to_now(primary, on_standby)
    primary_engine, standby_engine = create_engine(primary_url), create_engine(standby.url)
    try:
        async with PricingLookup(
            standby_engine, listen_to=primary_engine, cache_size=100
        ) as lookup:
            assert await lookup.get("Zara", "dresses") is None
            await replay_paused(on_standby)
            await primary.execute(
                "INSERT INTO public.brand_groups (brand, group_name, base_price) "
                "VALUES ('Zara', 'dresses', 15)"
            )
            await heard(lookup, 1)
            assert await lookup.get("Zara", "dresses") is None  # what the standby has
            assert await lookup.get("Zara", "dresses") is None  # read again, not cached
            await on_standby.execute("SELECT pg_wal_replay_resume()")
            await replayed_up_to_now(primary, on_standby)

            async def found() -> bool:
                return await lookup.get("Zara", "dresses") is not None

            assert await eventually(found, HEARD_WITHIN) < HEARD_WITHIN
    finally:
        await primary_engine.dispose()
        await standby_engine.dispose()


async def test_a_value_read_before_a_late_position_is_never_cached_over_a_later_change(
    primary_url: URL, on_standby: asyncpg.Connection, standby: Standby, primary: asyncpg.Connection
) -> None:
    """Two changes to one Brand×Group; the standby's replay paused between them.

    The lookup hears changes through a proxy that delays each way by PROXY_DELAY, so the
    primary's position for the second change comes back late: reads meanwhile serve the
    standby's first value and must not cache it, neither before the position is back nor
    after (the standby has not replayed up to it). Once the standby has replayed up to the
    primary's position, the second value is served within HEARD_WITHIN, and only it.
    """
    await replayed_up_to_now(primary, on_standby)
    async with DelayingProxy("127.0.0.1", int(primary_url.port or 5432), 0.0) as proxy:
        listen_engine = create_engine(primary_url.set(port=proxy.port))
        standby_engine = create_engine(standby.url)
        try:
            async with Counted(standby_engine, listen_to=listen_engine, cache_size=100) as lookup:
                lookup.sent = []
                proxy.delay = PROXY_DELAY  # once listening: a connection takes many round trips
                await primary.execute(
                    "UPDATE public.brand_groups SET base_price = 30 WHERE brand = 'Levi''s'"
                )
                await heard(lookup, 1)
                await replayed_up_to_now(primary, on_standby)
                await replay_paused(on_standby)  # after the first change, before the second
                await primary.execute(
                    "UPDATE public.brand_groups SET base_price = 35 WHERE brand = 'Levi''s'"
                )
                await heard(lookup, 2)

                # The position for the second change is on its way back: not cached.
                assert await base_price(lookup, "Levi's") == Decimal("30.00")
                assert await base_price(lookup, "Levi's") == Decimal("30.00")
                await asyncio.sleep(2 * PROXY_DELAY + 0.2)  # now it is back
                assert await base_price(lookup, "Levi's") == Decimal("30.00")
                assert await base_price(lookup, "Levi's") == Decimal("30.00")
                assert await sent(lookup) == 4, "the standby's older value was cached"

                await on_standby.execute("SELECT pg_wal_replay_resume()")
                await replayed_up_to_now(primary, on_standby)

                async def second_value() -> bool:
                    return await base_price(lookup, "Levi's") == Decimal("35.00")

                assert await eventually(second_value, HEARD_WITHIN) < HEARD_WITHIN
                for _ in range(20):  # and keeps returning it, cached or not
                    assert await base_price(lookup, "Levi's") == Decimal("35.00")
                    await asyncio.sleep(0.02)
                before = await sent(lookup)
                assert await base_price(lookup, "Levi's") == Decimal("35.00")
                assert await sent(lookup) == before  # cached by now, with the second value
                assert lookup.stats().listening
        finally:
            await listen_engine.dispose()
            await standby_engine.dispose()


async def test_more_changed_groups_than_remembered_leave_the_cache_working_once_replayed(
    primary_url: URL,
    on_standby: asyncpg.Connection,
    standby: Standby,
    primary: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past REMEMBERED_GROUPS changed groups the cache forgets which; it must still recover."""
    monkeypatch.setattr(cache_module, "REMEMBERED_GROUPS", 20)
    await primary.execute(
        "INSERT INTO public.brand_groups (brand, group_name, base_price) "
        "SELECT 'Brand ' || n, 'jeans', 25 FROM generate_series(0, 99) AS n"
    )
    await replayed_up_to_now(primary, on_standby)
    primary_engine, standby_engine = create_engine(primary_url), create_engine(standby.url)
    try:
        async with Counted(standby_engine, listen_to=primary_engine, cache_size=1_000) as lookup:
            for number in (7, 77):
                assert await base_price(lookup, f"Brand {number}") == Decimal("25.00")
            for number in range(50):  # 50 commits, one group each
                await primary.execute(
                    "UPDATE public.brand_groups SET base_price = 26 WHERE brand = $1",
                    f"Brand {number}",
                )
            await primary.execute(  # and one commit naming 50 groups
                "UPDATE public.brand_groups SET base_price = 27 WHERE brand = ANY($1::text[])",
                [f"Brand {number}" for number in range(50, 100)],
            )
            await heard(lookup, 51)
            await replayed_up_to_now(primary, on_standby)

            async def cached_again() -> bool:
                for brand, expected in (("Brand 7", "26.00"), ("Brand 77", "27.00")):
                    assert await base_price(lookup, brand) == Decimal(expected)
                    before = await sent(lookup)
                    assert await base_price(lookup, brand) == Decimal(expected)
                    if await sent(lookup) != before:
                        return False
                return True

            assert await eventually(cached_again, HEARD_WITHIN) < HEARD_WITHIN
            assert lookup.stats().listening
            # Brand 77, still cached when the 21st group changed, went with the groups forgotten.
            assert lookup.stats().evictions["table"] >= 1
    finally:
        await primary_engine.dispose()
        await standby_engine.dispose()


async def test_listening_to_a_standby_fails_the_start_with_the_packages_error_and_holds_nothing(
    primary_url: URL, on_standby: asyncpg.Connection, standby: Standby
) -> None:
    """A standby carries no notifications: LISTEN fails there, and so does the start."""
    reads, listens = create_engine(primary_url), create_engine(standby.url)
    try:
        lookup = PricingLookup(reads, cache_size=10, listen_to=listens)
        with pytest.raises(PricingStoreError) as raised:
            await lookup.start()
        assert raised.value.__cause__ is not None  # the driver's own error, kept
        left = await on_standby.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'pricing_store lookup' AND pid <> pg_backend_pid()"
        )
        assert left == 0  # the failed listener closed its connection before the start raised
        await lookup.close()
        assert not [
            task
            for task in asyncio.all_tasks()
            if "ChangeListener.run" in repr(task.get_coro()) and not task.done()
        ]
    finally:
        await reads.dispose()
        await listens.dispose()
