"""Read paths: PricingLookup and the repositories against raw asyncpg and the usual choices.

Contenders besides raw asyncpg (the limit): the seed plan's ORM repository code, made
async and otherwise as written, and advanced-alchemy's async repository, the library a
user would otherwise pick.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any

import asyncpg
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from bench.harness import PREPARED, Line, against, compare, nothing
from pricing_store import (
    BrandGroup,
    BrandGroupRepository,
    ModelRepository,
    PricingLookup,
    create_engine,
    create_session_factory,
)
from pricing_store.lookup.queries import GET_MANY_SQL, GET_SQL
from pricing_store.repositories.statements import key_parameters, table_of
from tests.provision import asyncpg_dsn

BRAND_GROUPS = 50_000  # also 500 pages of 100 rows
MODELS_PER_GROUP = 5
KEYED_GROUPS = 1_000  # the brand groups lookups cycle over, each with its models
# Many short rounds: the paired ratios of turns close in time vary less than long ones.
ROUNDS = 11
CALLS = 1_000
# Fewer for find_by_brand_and_group: the slowest ORM contenders take milliseconds a call.
FIND_CALLS = 500
CACHED_CALLS = 100_000
BATCHES = 50
BATCH = 50
TASKS = 32
POOL = 10
CALLS_PER_TASK = 50
PAGE = 100
HOT_KEYS = 2_000
HOT_CALLS = 400_000
WRITES_PER_SECOND = 50
CACHED = "PricingLookup.get, cache_size=1000"
UNCACHED = "PricingLookup.get"
TRACKING = "PricingLookup.get, listen_to, all misses"
FLOOR = "floor: await of a bare dict look-up"
NOTED_FLOOR = "floor with a note: the same, each hit appended to a list"
GET_MANY = "PricingLookup.get_many"
CEILING = "ceiling: raw asyncpg, same query"
FIND = "BrandGroupRepository"
CORE_FIND = "SQLAlchemy Core, same select (rows)"
ORM_FIND = "SQLAlchemy ORM, same select (objects)"
FIND_BY_KEY_SQL = "SELECT * FROM public.brand_groups WHERE brand = $1 AND group_name = $2"


class SeedBrandGroupRepository:
    """The seed plan's repository, with `await` added and nothing else changed."""

    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def find_by_brand_and_group(self, brand: str, group: str) -> BrandGroup | None:
        """Find brand group by exact brand and group name match."""
        stmt = select(BrandGroup).where(BrandGroup.brand == brand, BrandGroup.group_name == group)
        return (await self.db.execute(stmt)).scalar_one_or_none()


class AdvancedAlchemyBrandGroups(SQLAlchemyAsyncRepository[BrandGroup]):  # type: ignore[misc]
    """advanced-alchemy's repository for the same model."""

    model_type = BrandGroup  # advanced-alchemy's name for it


def keys() -> itertools.cycle[tuple[str, str, str]]:
    """Known Brand×Group and model keys, round and round."""
    return itertools.cycle(
        (f"Brand {number}", "jeans", f"Model {number % MODELS_PER_GROUP}")
        for number in range(KEYED_GROUPS)
    )


async def load(url: URL) -> None:
    """Brand groups for paging, and models for the first KEYED_GROUPS of them."""
    engine = create_engine(url)
    async with create_session_factory(engine).begin() as session:
        await BrandGroupRepository(session).bulk_upsert(
            {"brand": f"Brand {number}", "group_name": "jeans", "base_price": 25}
            for number in range(BRAND_GROUPS)
        )
        await ModelRepository(session).bulk_upsert(
            {
                "brand": f"Brand {number}",
                "group_name": "jeans",
                "model": f"Model {variant}",
                "coefficient": "1.4",
                "expected_features": ["selvedge"],
            }
            for number in range(KEYED_GROUPS)
            for variant in range(MODELS_PER_GROUP)
        )
    await engine.dispose()


async def bench_reads(url: URL) -> list[Line]:
    """Every read-path comparison."""
    await load(url)
    raw = await asyncpg.connect(asyncpg_dsn(url))
    engine = create_engine(url, pool_size=POOL)
    sessions = create_session_factory(engine)
    prepared = await raw.prepare(GET_SQL)
    lines: list[Line] = []
    async with (
        PricingLookup(engine) as lookup,
        PricingLookup(engine, cache_size=KEYED_GROUPS) as cached,
        # A cache of one entry, keys never repeated back to back: every call misses, and
        # each read brings back a replay position as it would from a standby.
        PricingLookup(engine, cache_size=1, listen_to=engine) as tracking,
    ):

        async def raw_get() -> None:
            for key, _ in zip(keys(), range(CALLS), strict=False):
                await prepared.fetchrow(*key)

        async def lookup_get() -> None:
            for key, _ in zip(keys(), range(CALLS), strict=False):
                await lookup.get(*key)

        async def tracking_get() -> None:
            for key, _ in zip(keys(), range(CALLS), strict=False):
                await tracking.get(*key)

        hits = [key for key, _ in zip(keys(), range(KEYED_GROUPS), strict=False)]

        async def warm() -> None:
            for brand, group, model in hits:
                await cached.get(brand, group, model)

        async def cached_get() -> None:
            for _ in range(CACHED_CALLS // KEYED_GROUPS):
                for brand, group, model in hits:
                    await cached.get(brand, group, model)
            cached.stats()  # the hits' notes tallied: their deferred cost is counted too

        # The least any cached async get can cost: awaiting a dict look-up.
        entries = dict.fromkeys(hits)

        async def look_up(brand: str, group: str, model: str) -> Any:
            return entries.get((brand, group, model))

        async def awaited_look_ups() -> None:
            for _ in range(CACHED_CALLS // KEYED_GROUPS):
                for brand, group, model in hits:
                    await look_up(brand, group, model)

        # The least an exact LRU order and hit count can add: one list append per hit (the
        # cheapest step CPython has that records which entry was hit, in order).
        notes: list[Any] = []

        async def look_up_noted(brand: str, group: str, model: str) -> Any:
            hit = entries.get((brand, group, model))
            notes.append(hit)
            return hit

        async def noted_look_ups() -> None:
            for _ in range(CACHED_CALLS // KEYED_GROUPS):
                for brand, group, model in hits:
                    await look_up_noted(brand, group, model)
            notes.clear()

        lines += await compare(
            "lookup.get, uncached",
            "calls/s",
            [
                (PREPARED, CALLS, nothing, raw_get),
                (UNCACHED, CALLS, nothing, lookup_get),
                (TRACKING, CALLS, nothing, tracking_get),
            ],
            rounds=ROUNDS,
        )
        lines += await compare(
            "lookup.get, cached hit",
            "calls/s",
            [
                (PREPARED, CALLS, nothing, raw_get),
                (CACHED, CACHED_CALLS, warm, cached_get),
                (FLOOR, CACHED_CALLS, nothing, awaited_look_ups),
                (NOTED_FLOOR, CACHED_CALLS, nothing, noted_look_ups),
            ],
            rounds=ROUNDS,
        )

        batches = [
            [key for key, _ in zip(keys(), range(BATCH * n, BATCH * (n + 1)), strict=False)]
            for n in range(BATCHES)
        ]

        async def sequential_gets() -> None:
            for batch in batches:
                for key in batch:
                    await lookup.get(*key)

        async def get_many() -> None:
            for batch in batches:
                await lookup.get_many(batch)

        # The most any batched lookup can gain here: the driver running the same query.
        prepared_many = await raw.prepare(GET_MANY_SQL)

        async def raw_many() -> None:
            for batch in batches:
                await prepared_many.fetch(*zip(*batch, strict=True))

        lines += await compare(
            "50 keys at once",
            "keys/s",
            [
                ("50 sequential PricingLookup.get", BATCH * BATCHES, nothing, sequential_gets),
                (GET_MANY, BATCH * BATCHES, nothing, get_many),
                (CEILING, BATCH * BATCHES, nothing, raw_many),
            ],
            rounds=ROUNDS,
        )
        lines += await bench_concurrent(url, engine)
        lines += await bench_cache_under_writes(url, engine)
    lines += await bench_find(raw, sessions)
    lines += await bench_paging(sessions)
    await raw.close()
    await engine.dispose()
    return lines


async def bench_concurrent(url: URL, engine: Any) -> list[Line]:
    """32 tasks sharing 10 connections."""
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=POOL, max_size=POOL)

    async def no_reset(connection: Any) -> None:
        """Nothing to reset: lookups leave no session state behind."""

    # asyncpg's own pool without its per-release reset: what DriverPool would be replaced by.
    unreset = await asyncpg.create_pool(
        asyncpg_dsn(url), min_size=POOL, max_size=POOL, reset=no_reset
    )
    lookup = PricingLookup(engine, pool_size=POOL)
    await lookup.start()

    async def task_gets(get: Any) -> None:
        for key, _ in zip(keys(), range(CALLS_PER_TASK), strict=False):
            await get(*key)

    async def pool_fetchrow(*key: str) -> Any:
        return await pool.fetchrow(GET_SQL, *key)

    async def raw_pool() -> None:
        await asyncio.gather(*(task_gets(pool_fetchrow) for _ in range(TASKS)))

    async def unreset_fetchrow(*key: str) -> Any:
        return await unreset.fetchrow(GET_SQL, *key)

    async def unreset_pool() -> None:
        await asyncio.gather(*(task_gets(unreset_fetchrow) for _ in range(TASKS)))

    async def lookups() -> None:
        await asyncio.gather(*(task_gets(lookup.get) for _ in range(TASKS)))

    work = TASKS * CALLS_PER_TASK
    lines = await compare(
        "32 tasks, 10 connections",
        "calls/s",
        [
            ("asyncpg pool fetchrow", work, nothing, raw_pool),
            ("asyncpg pool fetchrow, no reset", work, nothing, unreset_pool),
            ("PricingLookup.get", work, nothing, lookups),
        ],
        rounds=ROUNDS,
    )
    await lookup.close()
    await pool.close()
    await unreset.close()
    return lines


async def bench_cache_under_writes(url: URL, engine: Any) -> list[Line]:
    """Cached gets of hot keys while another connection commits writes to other keys."""
    hot = [(f"Brand {number}", "jeans", None) for number in range(HOT_KEYS)]
    writer = await asyncpg.connect(asyncpg_dsn(url))

    async def write_elsewhere() -> None:
        started = time.monotonic()
        for number in itertools.count():
            await writer.execute(
                "UPDATE public.brand_groups SET base_price = 25 + $2 WHERE brand = $1",
                f"Brand {HOT_KEYS + number % (BRAND_GROUPS - HOT_KEYS)}",
                number % 2,
            )
            await asyncio.sleep(started + (number + 1) / WRITES_PER_SECOND - time.monotonic())

    async with PricingLookup(engine, cache_size=HOT_KEYS) as lookup:

        async def warm() -> None:
            for key in hot:
                await lookup.get(*key)

        async def hot_gets() -> None:
            for _ in range(HOT_CALLS // HOT_KEYS):
                for brand, group, model in hot:
                    await lookup.get(brand, group, model)
                # A service's loop turns between requests: notifications get handled.
                await asyncio.sleep(0)

        async def hot_gets_under_writes() -> None:
            writing = asyncio.create_task(write_elsewhere())
            try:
                await hot_gets()
            finally:
                writing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writing

        lines = await compare(
            f"cached get, {HOT_KEYS:,} hot keys",
            "calls/s",
            [
                ("no writes", HOT_CALLS, warm, hot_gets),
                (
                    f"{WRITES_PER_SECOND} writes/s to other keys",
                    HOT_CALLS,
                    warm,
                    hot_gets_under_writes,
                ),
            ],
            rounds=ROUNDS,
        )
    await writer.close()
    return lines


async def bench_find(raw: Any, sessions: Any) -> list[Line]:
    """find_by_brand_and_group returning ORM objects, against the usual ways to write it."""
    statement = await raw.prepare(FIND_BY_KEY_SQL)
    # SQLAlchemy's own cost per statement, before any ORM object: the same select in Core.
    core_select = select(table_of(BrandGroup)).where(
        *key_parameters(BrandGroup, BrandGroup.natural_key)
    )
    orm_select = select(BrandGroup).where(*key_parameters(BrandGroup, BrandGroup.natural_key))

    def calls() -> Any:
        pairs = ((brand, group) for brand, group, _ in keys())
        return itertools.islice(pairs, FIND_CALLS)

    async def raw_find() -> None:
        for key in calls():
            await statement.fetchrow(*key)

    async def seed_new_session() -> None:
        for key in calls():
            async with sessions() as session:
                await SeedBrandGroupRepository(session).find_by_brand_and_group(*key)

    async def seed_one_session() -> None:
        async with sessions() as session:
            repository = SeedBrandGroupRepository(session)
            for key in calls():
                await repository.find_by_brand_and_group(*key)

    async def advanced_alchemy() -> None:
        async with sessions() as session:
            repository = AdvancedAlchemyBrandGroups(session=session)
            for brand, group in calls():
                await repository.get_one_or_none(brand=brand, group_name=group)

    async def core() -> None:
        async with sessions() as session:
            connection = await session.connection()
            for brand, group in calls():
                key = {"brand": brand, "group_name": group}
                (await connection.execute(core_select, key)).first()

    # What any ORM object in a session costs: the session running the same select, built
    # once, with keys passed canonical (the repository canonicalises them on each call).
    async def orm() -> None:
        async with sessions() as session:
            for brand, group in calls():
                await session.scalar(orm_select, {"brand": brand, "group_name": group})

    async def package() -> None:
        async with sessions() as session:
            repository = BrandGroupRepository(session)
            for key in calls():
                await repository.find_by_brand_and_group(*key)

    return await compare(
        "find_by_brand_and_group",
        "calls/s",
        [
            (PREPARED, FIND_CALLS, nothing, raw_find),
            ("seed ORM code, new session per call", FIND_CALLS, nothing, seed_new_session),
            ("seed ORM code, one session", FIND_CALLS, nothing, seed_one_session),
            ("advanced-alchemy get_one_or_none", FIND_CALLS, nothing, advanced_alchemy),
            (FIND, FIND_CALLS, nothing, package),
            (ORM_FIND, FIND_CALLS, nothing, orm),
            (CORE_FIND, FIND_CALLS, nothing, core),
        ],
        rounds=ROUNDS,
    )


async def bench_paging(sessions: Any) -> list[Line]:
    """The 500th keyset page of 100 rows against the first."""
    async with sessions() as session:
        repository = BrandGroupRepository(session)
        cursor = None
        for _ in range(BRAND_GROUPS // PAGE - 1):
            cursor = (await repository.get_page(PAGE, after=cursor)).next_cursor

        async def first_pages() -> None:
            for _ in range(20):
                await repository.get_page(PAGE)
                session.expunge_all()

        async def last_pages() -> None:
            for _ in range(20):
                page = await repository.get_page(PAGE, after=cursor)
                assert len(page.items) == PAGE
                session.expunge_all()

        return await compare(
            "keyset get_page, 100 rows",
            "pages/s",
            [("page 1", 20, nothing, first_pages), ("page 500", 20, nothing, last_pages)],
            rounds=ROUNDS,
        )


def read_goals(lines: list[Line]) -> list[str]:
    """The read paths' goals, each against the line that shows what the machine allows."""
    return [
        against(lines, CACHED, FLOOR, 0.85),
        against(lines, TRACKING, UNCACHED),
        against(lines, CACHED, NOTED_FLOOR),
        against(lines, GET_MANY, CEILING, 0.85),
        against(lines, FIND, CORE_FIND, 0.8),
        against(lines, ORM_FIND, CORE_FIND),
        against(lines, FIND, ORM_FIND),
    ]
