"""Repositories and lookups through a real PgBouncer in transaction mode, many tasks at once."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pricing_store import (
    BrandGroupRepository,
    InvalidValueError,
    ModelRepository,
    PricingLookup,
    create_engine,
    create_session_factory,
)
from tests.factories import brand_group, model

TASKS = 40


@pytest.fixture
def through_pgbouncer(pgbouncer: URL, engine: AsyncEngine) -> URL:
    """The test database, reached through PgBouncer."""
    return pgbouncer.set(database=engine.url.database)


async def write_and_read(sessions: async_sessionmaker[AsyncSession], number: int) -> None:
    """Every repository path, in transactions PgBouncer hands out to any server connection."""
    async with sessions.begin() as session:
        brands = BrandGroupRepository(session)
        models = ModelRepository(session)
        await brands.create(brand_group(f"Brand {number}"))
        await brands.upsert(brand_group(f"Brand {number}", base_price=30))
        await brands.get_or_create(brand_group("Shared"))
        await models.get_or_create(model(f"Brand {number}", name="501"))
        await models.bulk_upsert(model(f"Brand {number}", name=f"M{n}") for n in range(20))
        await models.get_or_create(model(f"Brand {number}", name="Big E", coefficient="2.0"))
    async with sessions() as session:
        found = await BrandGroupRepository(session).find_by_brand_and_group(
            f"Brand {number}", "jeans"
        )
        assert found is not None
        assert (
            len(await ModelRepository(session).find_by_brand_and_group(f"Brand {number}", "jeans"))
            == 22
        )
        assert len((await BrandGroupRepository(session).get_page(5)).items) == 5


@pytest.mark.parametrize("by", ["argument", "url"])
async def test_many_tasks_through_pgbouncer(
    through_pgbouncer: URL, session_factory: async_sessionmaker[AsyncSession], by: str
) -> None:
    engine = (
        create_engine(through_pgbouncer, pgbouncer=True, pool_size=20)
        if by == "argument"
        else create_engine(through_pgbouncer.update_query_dict({"pgbouncer": "true"}), pool_size=20)
    )
    sessions = create_session_factory(engine)

    await asyncio.gather(*(write_and_read(sessions, number) for number in range(TASKS)))

    async with PricingLookup(engine, pool_size=10) as lookup:
        references = await asyncio.gather(
            *(lookup.get(f"Brand {number}", "jeans", "Big E") for number in range(TASKS)),
            *(
                lookup.get_many([(f"Brand {number}", "jeans", "M1"), ("Shared", "jeans")])
                for number in range(TASKS)
            ),
        )
    assert all(reference for reference in references)
    async with sessions() as session:
        assert await BrandGroupRepository(session).count() == TASKS + 1
        assert await ModelRepository(session).count() == TASKS * 22
    await engine.dispose()


def test_a_caching_lookup_refuses_pgbouncer(through_pgbouncer: URL) -> None:
    engine = create_engine(through_pgbouncer, pgbouncer=True)

    with pytest.raises(InvalidValueError, match=r"^cache_size: .*LISTEN"):
        PricingLookup(engine, cache_size=100)


async def test_a_caching_lookup_reads_through_pgbouncer_and_listens_to_the_server(
    through_pgbouncer: URL, engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    pooled = create_engine(through_pgbouncer, pgbouncer=True)
    async with session_factory.begin() as session:
        await BrandGroupRepository(session).create(brand_group())

    async with PricingLookup(pooled, cache_size=10, listen_to=engine) as lookup:
        before = await lookup.get("Levi's", "jeans")
        async with session_factory.begin() as session:
            await BrandGroupRepository(session).upsert(brand_group(base_price=40))
        for _ in range(100):
            after = await lookup.get("Levi's", "jeans")
            if after is not None and after.base_price == 40:
                break
            await asyncio.sleep(0.01)

    assert before is not None
    assert before.base_price == 25
    assert after is not None
    assert after.base_price == 40
    await pooled.dispose()
