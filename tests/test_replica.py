"""Reading from a real streaming standby: a lagging standby's values are never cached."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import URL

from pricing_store import PricingLookup, create_engine
from tests.helpers import Counted, eventually
from tests.provision import OwnServer, Standby, asyncpg_dsn


@pytest.fixture
async def primary(own_database: URL) -> AsyncIterator[asyncpg.Connection]:
    """The own server (migrated), where the changes are made."""
    connection = await asyncpg.connect(asyncpg_dsn(own_database))
    await connection.execute(
        "INSERT INTO public.brand_groups (brand, group_name, base_price) "
        "VALUES ('Levi''s', 'jeans', 25), ('Nike', 'sneakers', 60)"
    )
    yield connection
    await connection.close()


@pytest.fixture
def standby(own_server: OwnServer, tmp_path: Path, primary: asyncpg.Connection) -> Any:
    """A streaming standby started from the own server with `pg_basebackup -R`."""
    replica = own_server.standby(tmp_path)
    yield replica
    replica.close()


async def replayed_up_to_now(primary: asyncpg.Connection, on_standby: asyncpg.Connection) -> None:
    position = await primary.fetchval("SELECT pg_current_wal_lsn()")

    async def caught_up() -> bool:
        replayed = await on_standby.fetchval("SELECT pg_last_wal_replay_lsn()")
        return bool(replayed >= position)

    await eventually(caught_up, within=10.0)


async def sent(lookup: Counted) -> int:
    await asyncio.sleep(0)
    return len(lookup.sent)


async def test_a_lagging_standby_is_served_but_not_cached(
    own_database: URL, standby: Standby, primary: asyncpg.Connection
) -> None:
    on_standby = await asyncpg.connect(asyncpg_dsn(standby.url))
    assert await on_standby.fetchval("SELECT pg_is_in_recovery()")
    await replayed_up_to_now(primary, on_standby)
    primary_engine, standby_engine = create_engine(own_database), create_engine(standby.url)
    try:
        async with Counted(standby_engine, listen_to=primary_engine, cache_size=100) as lookup:
            lookup.sent = []
            # Past the position the lookup noted at start (the primary's WAL moves on its own).
            await replayed_up_to_now(primary, on_standby)

            async def price(brand: str) -> Decimal | None:
                reference = await lookup.get(brand, "jeans" if brand == "Levi's" else "sneakers")
                return None if reference is None else reference.base_price

            assert await price("Levi's") == Decimal("25.00")
            assert await price("Levi's") == Decimal("25.00")
            assert await sent(lookup) == 1  # cached: the standby had replayed every change

            await on_standby.execute("SELECT pg_wal_replay_pause()")
            await primary.execute("UPDATE public.brand_groups SET base_price = 30")
            await eventually(lambda: asyncio.sleep(0, lookup.stats().notifications == 1))

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

            async def fresh() -> bool:
                return await price("Levi's") == Decimal("30.00")

            assert await eventually(fresh) < 1.0
            before = await sent(lookup)
            assert await price("Levi's") == Decimal("30.00")
            assert await sent(lookup) == before  # cached again once replayed
    finally:
        await on_standby.close()
        await primary_engine.dispose()
        await standby_engine.dispose()


async def test_a_missing_key_is_not_cached_as_missing_while_the_standby_lags(
    own_database: URL, standby: Standby, primary: asyncpg.Connection
) -> None:
    on_standby = await asyncpg.connect(asyncpg_dsn(standby.url))
    await replayed_up_to_now(primary, on_standby)
    primary_engine, standby_engine = create_engine(own_database), create_engine(standby.url)
    try:
        async with PricingLookup(
            standby_engine, listen_to=primary_engine, cache_size=100
        ) as lookup:
            assert await lookup.get("Zara", "dresses") is None
            await on_standby.execute("SELECT pg_wal_replay_pause()")
            await primary.execute(
                "INSERT INTO public.brand_groups (brand, group_name, base_price) "
                "VALUES ('Zara', 'dresses', 15)"
            )
            await eventually(lambda: asyncio.sleep(0, lookup.stats().notifications == 1))
            assert await lookup.get("Zara", "dresses") is None  # what the standby has
            await on_standby.execute("SELECT pg_wal_replay_resume()")

            async def found() -> bool:
                return await lookup.get("Zara", "dresses") is not None

            assert await eventually(found) < 1.0
    finally:
        await on_standby.close()
        await primary_engine.dispose()
        await standby_engine.dispose()
