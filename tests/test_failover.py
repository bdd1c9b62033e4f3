"""A real failover: a primary and a synchronous standby of our own, on a multi-host URL.

The primary is stopped as a crash would (`pg_ctl -m immediate stop`) while a caching,
generating lookup, a repository writer and an uncached reader run; the standby is promoted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL

from pricing_store import (
    BrandGroupRepository,
    DatabaseUnavailableError,
    PricingLookup,
    create_engine,
    create_session_factory,
)
from pricing_store.db import database_url
from tests.helpers import eventually
from tests.provision import OwnServer, Standby, asyncpg_dsn, free_port

TRAFFIC_BEFORE = 1.0  # seconds of traffic before the primary goes
DOWN_BEFORE_PROMOTION = 1.0  # seconds with no primary at all
RESUME_WITHIN = 5.0  # the guarantee: reads and writes work again this soon after promotion


@dataclass
class Traffic:
    """What each kind of caller saw, and when it last succeeded."""

    unavailable: int = 0
    other_errors: list[BaseException] = field(default_factory=list)
    successes: list[float] = field(default_factory=list)

    def resumed_after(self, moment: float) -> float:
        """Seconds from `moment` to the first success after it."""
        return min(when for when in self.successes if when > moment) - moment

    async def run(self, call: Callable[[], Awaitable[object]], stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await call()
            except DatabaseUnavailableError:
                self.unavailable += 1
                await asyncio.sleep(0.05)
                continue
            except Exception as error:
                self.other_errors.append(error)
                await asyncio.sleep(0.05)
                continue
            self.successes.append(time.monotonic())
            await asyncio.sleep(0.01)


class OnceLLM:
    """Generates instantly, counting its calls per key."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, ...], int] = {}

    async def brand_group(self, brand: str, group: str) -> dict[str, object]:
        self.calls[(brand, group)] = self.calls.get((brand, group), 0) + 1
        await asyncio.sleep(0.05)
        return {"base_price": "40.00"}

    async def model(self, brand: str, group: str, model: str) -> dict[str, object]:
        raise AssertionError("no model is asked for")


@pytest.fixture
async def pair(
    own_server: OwnServer, own_database: URL, tmp_path: Path
) -> AsyncIterator[tuple[URL, OwnServer, Standby]]:
    """A migrated primary on TCP, a synchronous standby on TCP, and the URL naming both."""
    own_server.stop()
    primary_port, standby_port = free_port(), free_port()
    own_server.start(tcp_port=primary_port)
    primary_url = own_database.set(host="127.0.0.1", port=primary_port, query={})
    standby = own_server.standby(tmp_path, tcp_port=standby_port)
    admin = await asyncpg.connect(asyncpg_dsn(primary_url))
    try:
        # Commits wait for the standby: what a caller saw committed survives the failover.
        await admin.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        await admin.execute("SELECT pg_reload_conf()")

        async def synchronous() -> bool:
            state = await admin.fetchval("SELECT sync_state FROM pg_stat_replication")
            return bool(state == "sync")

        await eventually(synchronous, within=10.0)
    finally:
        await admin.close()
    user = own_database.username or "postgres"
    both = database_url(
        f"postgresql://{user}@127.0.0.1:{primary_port},127.0.0.1:{standby_port}/"
        f"{own_database.database}"
    )
    yield both, own_server, standby
    standby.close()


async def test_reads_writes_generation_and_the_cache_follow_a_failover(
    pair: tuple[URL, OwnServer, Standby],
) -> None:
    url, primary, standby = pair
    assert url.query["target_session_attrs"] == "read-write"  # the multi-host default
    engine = create_engine(url, pool_size=5)
    sessions = create_session_factory(engine)
    llm = OnceLLM()
    committed: dict[str, Decimal] = {}
    written, read, generated = Traffic(), Traffic(), Traffic()
    counter = iter(range(1_000_000))

    async def write() -> None:
        number = next(counter)
        async with sessions.begin() as session:
            await BrandGroupRepository(session).upsert(
                {"brand": f"Written {number}", "group_name": "jeans", "base_price": 25}
            )
        committed[f"Written {number}"] = Decimal("25.00")

    try:
        async with (
            PricingLookup(engine, cache_size=1_000, generator=llm) as lookup,
            PricingLookup(engine) as uncached,
        ):

            async def read_one() -> None:
                await uncached.get("Written 0", "jeans")

            async def generate_one() -> None:
                await lookup.get_or_generate(f"Generated {next(counter) % 40}", "jeans")

            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(traffic.run(call, stop))
                for traffic, call in ((written, write), (read, read_one), (generated, generate_one))
            ]
            await asyncio.sleep(TRAFFIC_BEFORE)
            await asyncio.to_thread(primary.stop, "immediate")
            await asyncio.sleep(DOWN_BEFORE_PROMOTION)
            await asyncio.to_thread(standby.promote)
            promoted = time.monotonic()
            await asyncio.sleep(RESUME_WITHIN + 1)
            stop.set()
            await asyncio.gather(*tasks)

            for traffic in (written, read, generated):
                assert traffic.other_errors == [], traffic.other_errors[:3]
                assert traffic.resumed_after(promoted) < RESUME_WITHIN
            # The outage was seen, as the package's error. (A generation under way instead
            # waits for its row, which it stores once the new primary takes writes.)
            assert written.unavailable > 0
            assert read.unavailable > 0

            # The listener follows the new primary: a change there evicts within a second.
            cached_brand = next(iter(llm.calls))[0]
            assert await lookup.get(cached_brand, "jeans") is not None
            new_primary = await asyncpg.connect(asyncpg_dsn(standby.url))
            try:
                await new_primary.execute(
                    "UPDATE public.brand_groups SET base_price = 41 WHERE brand = $1",
                    cached_brand,
                )

                async def evicted() -> bool:
                    found = await lookup.get(cached_brand, "jeans")
                    return found is not None and found.base_price == Decimal("41.00")

                await eventually(evicted, within=1.0)
                stored = dict(
                    await new_primary.fetch(
                        "SELECT brand, base_price FROM public.brand_groups "
                        "WHERE brand LIKE 'Written %'"
                    )
                )
            finally:
                await new_primary.close()
    finally:
        await engine.dispose()

    assert {brand: stored.get(brand) for brand in committed} == committed  # nothing lost
    assert set(llm.calls.values()) == {1}  # no key generated twice
