"""The cache's listener under real faults: a silent network, bursts, a recovered server."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
import pytest
from sqlalchemy.engine import URL

from pricing_store import PricingLookup, create_engine
from pricing_store.lookup.listener import RECONNECT_DELAYS
from tests.helpers import eventually
from tests.provision import OwnServer, SilentProxy, asyncpg_dsn, free_port

GROUPS = 100
# A committed change is heard, and what it changed evicted, this soon on loopback.
HEARD_WITHIN = 0.5


@pytest.fixture
async def over_tcp(own_server: OwnServer, own_database: URL) -> URL:
    """The own server, migrated, listening on TCP as well (a proxy can stand in front)."""
    own_server.stop()
    port = free_port()
    own_server.start(tcp_port=port)
    url = own_database.set(host="127.0.0.1", port=port, query={})
    connection = await asyncpg.connect(asyncpg_dsn(url))
    await connection.execute(
        "INSERT INTO public.brand_groups (brand, group_name, base_price) "
        "SELECT 'Brand ' || n, 'jeans', 25 FROM generate_series(0, 999) AS n"
    )
    await connection.close()
    return url


async def price(url: URL, brand: str, value: int) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(
            "UPDATE public.brand_groups SET base_price = $2 WHERE brand = $1", brand, value
        )
    finally:
        await connection.close()


async def test_a_silent_listener_is_given_up_within_listen_timeout_then_caching_resumes(
    over_tcp: URL,
) -> None:
    """The network path goes silent: the listener gives it up within listen_timeout.

    Heartbeats go every listen_timeout / HEARTBEATS s of silence, each answered within what
    is left of listen_timeout. Back, it listens again within listen_timeout (an attempt
    made while silent times out) plus the longest reconnection delay.
    """
    listen_timeout = 1.0
    direct = create_engine(over_tcp)
    async with SilentProxy(str(over_tcp.host), int(over_tcp.port or 5432)) as proxy:
        proxied = create_engine(over_tcp.set(port=proxy.port))
        try:
            async with PricingLookup(
                direct, cache_size=100, listen_to=proxied, listen_timeout=listen_timeout
            ) as lookup:
                await lookup.get("Brand 1", "jeans")
                assert (await lookup.get("Brand 1", "jeans")).base_price == 25  # type: ignore[union-attr]
                assert lookup.stats().hits == 1

                proxy.pause()  # the listening connection goes silent, nothing is closed
                paused = time.monotonic()
                await price(over_tcp, "Brand 1", 30)  # a change the listener cannot hear
                given_up_within = listen_timeout + 0.25  # a little for the loop's turns
                await eventually(
                    lambda: asyncio.sleep(0, not lookup.stats().listening), given_up_within
                )
                assert time.monotonic() - paused < given_up_within
                assert (await lookup.get("Brand 1", "jeans")).base_price == 30  # type: ignore[union-attr]

                proxy.resume()
                await eventually(
                    lambda: asyncio.sleep(0, lookup.stats().listening),
                    listen_timeout + RECONNECT_DELAYS[-1] + HEARD_WITHIN,
                )
                hits = lookup.stats().hits
                await lookup.get("Brand 1", "jeans")
                await lookup.get("Brand 1", "jeans")
                assert lookup.stats().hits == hits + 1  # cached again
                await price(over_tcp, "Brand 1", 35)  # and heard again
                assert (
                    await eventually(lambda: value_is(lookup, "Brand 1", 35), HEARD_WITHIN)
                    < HEARD_WITHIN
                )
        finally:
            await proxied.dispose()
            await direct.dispose()


async def value_is(lookup: PricingLookup, brand: str, expected: int) -> bool:
    found = await lookup.get(brand, "jeans")
    return found is not None and found.base_price == expected


async def test_a_burst_of_changes_to_other_keys_leaves_the_cache_caching(
    over_tcp: URL,
) -> None:
    engine = create_engine(over_tcp)
    writer = await asyncpg.connect(asyncpg_dsn(over_tcp))
    try:
        # listen_to: positions are tracked for every notification, as for a standby.
        async with PricingLookup(engine, cache_size=1_000, listen_to=engine) as lookup:
            read = [f"Brand {n}" for n in range(GROUPS)]
            for brand in read:
                await lookup.get(brand, "jeans")

            async def burst() -> int:
                sent = 0
                ends = time.monotonic() + 2.0
                while time.monotonic() < ends:  # ~1,000 commits a second, bounded
                    await writer.execute(
                        "UPDATE public.brand_groups SET base_price = base_price + 1 "
                        "WHERE brand = $1",
                        f"Brand {GROUPS + sent % 900}",
                    )
                    sent += 1
                return sent

            sent = await burst()
            assert sent > 500
            await eventually(
                lambda: asyncio.sleep(0, lookup.stats().notifications >= sent), HEARD_WITHIN
            )

            async def all_hits() -> bool:
                before = lookup.stats().hits
                for brand in read:
                    await lookup.get(brand, "jeans")
                return lookup.stats().hits - before == GROUPS

            await eventually(all_hits, HEARD_WITHIN)
            assert lookup.stats().evictions["reconnect"] == 0
    finally:
        await writer.close()
        await engine.dispose()


async def test_a_primary_that_went_through_crash_recovery_is_cached(
    own_server: OwnServer, own_database: URL
) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(own_database))
    await connection.execute(
        "INSERT INTO public.brand_groups (brand, group_name, base_price) VALUES ('A', 'b', 25)"
    )
    await connection.close()
    own_server.stop("immediate")  # a crash: the next start replays the WAL
    own_server.start()

    engine = create_engine(own_database)
    try:
        async with PricingLookup(engine, cache_size=10, listen_to=engine) as lookup:
            for _ in range(50):
                await lookup.get("A", "b")
            assert lookup.stats().hits == 49
    finally:
        await engine.dispose()


async def test_an_outage_is_logged_once_per_cause_however_many_reconnections_fail(
    own_server: OwnServer, own_database: URL, caplog: pytest.LogCaptureFixture
) -> None:
    """A failover's seconds of refused reconnections: a warning per cause, then one "back"."""
    caplog.set_level(logging.DEBUG, logger="pricing_store.lookup.listener")
    engine = create_engine(own_database)
    try:
        async with PricingLookup(engine, cache_size=10, listen_timeout=0.5) as lookup:
            own_server.stop("immediate")
            await asyncio.sleep(3 * RECONNECT_DELAYS[-1])  # several attempts, all refused
            own_server.start()
            await eventually(lambda: asyncio.sleep(0, lookup.stats().listening), 5.0)
    finally:
        await engine.dispose()
    lost = [r for r in caplog.records if "change listener lost" in r.getMessage()]
    warned = [r.getMessage() for r in lost if r.levelno == logging.WARNING]
    causes = {message.split("(", 2)[1] for message in warned}  # the exception's class
    assert len(lost) >= 3  # the connection lost, then reconnections refused
    assert len(warned) == len(causes) < len(lost), warned  # each cause warned of once
    assert sum("change listener back" in r.getMessage() for r in caplog.records) == 1
