"""Faults a service meets in production, injected for real: stops, kills, missing TLS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import URL

from pricing_store import (
    BrandGroupRepository,
    PricingLookup,
    create_engine,
    create_session_factory,
)
from pricing_store.errors import DatabaseUnavailableError
from tests.factories import brand_group
from tests.provision import OwnServer, asyncpg_dsn, free_port

PASSWORD = "Canary-Pw-7731"


def with_password(url: URL) -> URL:
    return url.set(password=PASSWORD)


async def test_a_stopped_server_fails_fast_and_the_same_engine_recovers(
    own_server: OwnServer, own_database: URL
) -> None:
    engine = create_engine(with_password(own_database))
    sessions = create_session_factory(engine)
    async with sessions.begin() as session:
        await BrandGroupRepository(session).create(brand_group())
    lookup = PricingLookup(engine)
    await lookup.start()
    own_server.stop()

    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as repository_error:
        async with sessions() as session:
            await BrandGroupRepository(session).find_by_brand_and_group("Levi's", "jeans")
    with pytest.raises(DatabaseUnavailableError) as lookup_error:
        await lookup.get("Levi's", "jeans")
    assert time.monotonic() - started < 5

    for error in (repository_error.value, lookup_error.value):
        assert str(own_database.query["host"]) in str(error)
        assert "postgres" in str(error)  # the database's name
        assert PASSWORD not in str(error)

    own_server.start()
    async with sessions() as session:
        found = await BrandGroupRepository(session).find_by_brand_and_group("Levi's", "jeans")
    assert found is not None
    reference = await lookup.get("Levi's", "jeans")
    assert reference is not None
    assert reference.base_price == Decimal("25.00")
    await lookup.close()
    await engine.dispose()


async def test_connections_killed_by_the_server_are_replaced_before_use(own_database: URL) -> None:
    engine = create_engine(own_database, pool_size=5)
    sessions = create_session_factory(engine)

    async def count() -> int:
        async with sessions() as session:
            return await BrandGroupRepository(session).count()

    await asyncio.gather(*(count() for _ in range(5)))  # five pooled connections
    admin = await asyncpg.connect(asyncpg_dsn(own_database))
    killed = await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    )
    await admin.close()
    assert killed >= 5

    assert await asyncio.gather(*(count() for _ in range(5))) == [0] * 5
    await engine.dispose()


def slow_rows(count: int) -> Iterator[dict[str, Any]]:
    for number in range(count):
        if number % 1_000 == 0:
            time.sleep(0.01)  # let the killer in while the load is under way
        yield {"brand": f"Brand {number}", "group_name": "jeans", "base_price": 25}


async def test_a_bulk_upsert_whose_connection_is_killed_leaves_no_rows(own_database: URL) -> None:
    engine = create_engine(own_database)
    sessions = create_session_factory(engine)
    admin = await asyncpg.connect(asyncpg_dsn(own_database))

    async def load() -> None:
        async with sessions.begin() as session:
            await BrandGroupRepository(session).bulk_upsert(slow_rows(200_000), batch_size=1_000)

    async def kill_the_loader() -> None:
        killed = 0
        while not killed:  # as soon as the COPY is under way
            await asyncio.sleep(0.01)
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query LIKE 'COPY %' AND state = 'active'"
            )

    results = await asyncio.gather(load(), kill_the_loader(), return_exceptions=True)

    assert isinstance(results[0], Exception)
    assert await admin.fetchval("SELECT count(*) FROM public.brand_groups") == 0
    await admin.close()
    await engine.dispose()


async def test_the_cache_stays_correct_across_a_server_restart(
    own_server: OwnServer, own_database: URL
) -> None:
    engine = create_engine(own_database)
    async with create_session_factory(engine).begin() as session:
        await BrandGroupRepository(session).create(brand_group())
    async with PricingLookup(engine, cache_size=100) as lookup:
        before = await lookup.get("Levi's", "jeans")
        assert before is not None
        own_server.stop()
        own_server.start()
        admin = await asyncpg.connect(asyncpg_dsn(own_database))
        await admin.execute("UPDATE public.brand_groups SET base_price = 31")
        await admin.close()

        deadline = time.monotonic() + 5
        while True:
            try:
                reference = await lookup.get("Levi's", "jeans")
            except DatabaseUnavailableError:
                reference = None
            if reference is not None and reference.base_price == Decimal("31.00"):
                break
            assert time.monotonic() < deadline, "the restart left a stale cache"
            await asyncio.sleep(0.05)
        cache = lookup._cache
        assert cache is not None
        await asyncio.sleep(1.5)  # the listener is back within its longest backoff
        assert cache.active
    await engine.dispose()


async def test_sslmode_require_fails_clearly_without_tls_and_disable_connects(
    own_server: OwnServer, own_database: URL
) -> None:
    own_server.stop()
    port = free_port()
    own_server.start(tcp_port=port)  # this server has no TLS at all
    over_tcp = own_database.set(host="127.0.0.1", port=port, query={})
    required = create_engine(over_tcp.update_query_dict({"sslmode": "require"}))
    disabled = create_engine(over_tcp.update_query_dict({"sslmode": "disable"}))

    with pytest.raises(DatabaseUnavailableError, match="SSL"):
        async with create_session_factory(required)() as session:
            await BrandGroupRepository(session).count()
    async with create_session_factory(disabled)() as session:
        assert await BrandGroupRepository(session).count() == 0

    await required.dispose()
    await disabled.dispose()
