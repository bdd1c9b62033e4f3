"""Write paths: bulk_upsert against executemany and COPY; upsert against the same statement."""

from __future__ import annotations

import json
import re
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import URL

from bench.harness import PREPARED, Line, against, compare
from pricing_store import BrandGroup, BrandGroupRepository, create_engine, create_session_factory
from pricing_store.repositories.statements import upsert_returning_row
from tests.provision import asyncpg_dsn

EXECUTEMANY = "raw asyncpg executemany"
BULK = "pricing_store bulk_upsert"
COPY = "raw asyncpg COPY (empty table)"
CORE_UPSERT = "SQLAlchemy Core, same statement"
PACKAGE_UPSERT = "pricing_store upsert"
EXECUTEMANY_QUIET = "raw asyncpg executemany, triggers off"
BULK_QUIET = "pricing_store bulk_upsert, triggers off"
BULK_ROWS = 50_000
SINGLE_CALLS = 1_000
# One-row upserts take milliseconds a turn: many short rounds pair turns close in time.
SINGLE_ROUNDS = 11
# A bulk turn takes a second or more, and the server's writing varies from turn to turn
# by a quarter: more rounds than the default, for a steadier median.
BULK_ROUNDS = 9

COLUMNS = [
    "brand",
    "group_name",
    "base_price",
    "expected_origins",
    "expected_decades",
    "expected_trends",
    "condition_sensitivity",
]
DATA = COLUMNS[2:]
# The upsert bulk_upsert runs set-based, as a raw asyncpg user would write it for one row.
UPSERT_SQL = (
    f"INSERT INTO public.brand_groups AS target ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join(f'${n}' for n in range(1, len(COLUMNS) + 1))}) "
    "ON CONFLICT ON CONSTRAINT uq_brand_groups_brand_group DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in DATA)
    + ", updated_at = now() WHERE ("
    + ", ".join(f"target.{c}" for c in DATA)
    + ") IS DISTINCT FROM ("
    + ", ".join(f"excluded.{c}" for c in DATA)
    + ")"
)


def bulk_items(price_of_existing: int) -> list[dict[str, Any]]:
    """Half the keys exist already (their price changes), half are new."""
    half = BULK_ROWS // 2
    return [
        {
            "brand": f"Brand {number}",
            "group_name": "jeans",
            "base_price": price_of_existing if number < half else 25,
            "expected_origins": ["USA", "Mexico"],
            "expected_trends": ["workwear"],
        }
        for number in range(BULK_ROWS)
    ]


def as_record(item: dict[str, Any]) -> tuple[Any, ...]:
    """Return the positional record raw asyncpg takes; JSONB goes as JSON text."""
    return (
        item["brand"],
        item["group_name"],
        item["base_price"],
        json.dumps(item.get("expected_origins", [])),
        json.dumps(item.get("expected_decades", [])),
        json.dumps(item.get("expected_trends", [])),
        1,
    )


async def bench_bulk(url: URL) -> list[Line]:
    """50k brand groups, half new and half existing with a changed price."""
    raw = await asyncpg.connect(asyncpg_dsn(url))
    engine = create_engine(url)
    sessions = create_session_factory(engine)

    async def half_existing() -> None:
        await raw.execute("TRUNCATE public.brand_groups")
        existing = [as_record(item) for item in bulk_items(25)[: BULK_ROWS // 2]]
        await raw.copy_records_to_table(
            "brand_groups", schema_name="public", records=existing, columns=COLUMNS
        )
        await raw.execute("CHECKPOINT")  # no contender pays for another's dirty pages

    async def empty() -> None:
        await raw.execute("TRUNCATE public.brand_groups")
        await raw.execute("CHECKPOINT")

    async def raw_executemany() -> None:
        records = [as_record(item) for item in bulk_items(30)]
        async with raw.transaction():
            await raw.executemany(UPSERT_SQL, records)

    async def package_bulk_upsert() -> None:
        async with sessions.begin() as session:
            await BrandGroupRepository(session).bulk_upsert(bulk_items(30))

    async def raw_copy() -> None:
        records = [as_record(item) for item in bulk_items(30)]
        async with raw.transaction():
            await raw.copy_records_to_table(
                "brand_groups", schema_name="public", records=records, columns=COLUMNS
            )

    lines = await compare(
        "bulk upsert, 50k brand groups",
        "rows/s",
        [
            # What a naive loader costs: the change triggers fire once per statement it sends.
            (EXECUTEMANY, BULK_ROWS, half_existing, raw_executemany),
            (BULK, BULK_ROWS, half_existing, package_bulk_upsert),
            (COPY, BULK_ROWS, empty, raw_copy),
        ],
        rounds=BULK_ROUNDS,
    )

    # The same upserts with the package's triggers off for both: the merge against the
    # statement itself, sent row by row.
    async def half_existing_quietly() -> None:
        await half_existing()
        await raw.execute("ALTER TABLE public.brand_groups DISABLE TRIGGER USER")

    lines += await compare(
        "bulk upsert, triggers off for both",
        "rows/s",
        [
            (EXECUTEMANY_QUIET, BULK_ROWS, half_existing_quietly, raw_executemany),
            (BULK_QUIET, BULK_ROWS, half_existing_quietly, package_bulk_upsert),
        ],
        rounds=BULK_ROUNDS,
    )
    await raw.execute("ALTER TABLE public.brand_groups ENABLE TRIGGER USER")
    await raw.close()
    await engine.dispose()
    return lines


async def bench_single_upsert(url: URL) -> list[Line]:
    """One-row upserts in one transaction, over 100 keys whose prices keep changing."""
    raw = await asyncpg.connect(asyncpg_dsn(url))
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    # The very statement `upsert` sends, which also returns an unchanged row.
    sql = upsert_returning_row(BrandGroup, frozenset(COLUMNS)).sql
    statement = await raw.prepare(sql)
    items = [
        {"brand": f"Single {number % 100}", "group_name": "jeans", "base_price": 20 + number % 7}
        for number in range(SINGLE_CALLS)
    ]

    async def empty() -> None:
        await raw.execute("TRUNCATE public.brand_groups")

    async def raw_upsert() -> None:
        async with raw.transaction():
            for item in items:
                await statement.fetchrow(*as_record(item))

    async def package_upsert() -> None:
        async with sessions.begin() as session:
            repository = BrandGroupRepository(session)
            for item in items:
                await repository.upsert(item)

    # The ceiling for a statement that goes through SQLAlchemy's engine (and its events):
    # Core running the same statement, with named parameters, returning the row.
    core_statement = text(re.sub(r"\$(\d+)", r":p\1", sql))

    async def core_upsert() -> None:
        async with sessions.begin() as session:
            for item in items:
                values = {f"p{n}": value for n, value in enumerate(as_record(item), 1)}
                (await session.execute(core_statement, values)).first()

    lines = await compare(
        "upsert one row",
        "calls/s",
        [
            (PREPARED, SINGLE_CALLS, empty, raw_upsert),
            (CORE_UPSERT, SINGLE_CALLS, empty, core_upsert),
            (PACKAGE_UPSERT, SINGLE_CALLS, empty, package_upsert),
        ],
        rounds=SINGLE_ROUNDS,
    )
    await raw.close()
    await engine.dispose()
    return lines


def write_goals(lines: list[Line]) -> list[str]:
    """The write paths' goals, each against the line that shows what the machine allows."""
    return [
        against(lines, BULK, COPY, 0.6),
        against(lines, BULK_QUIET, EXECUTEMANY_QUIET, 1.75),
        against(lines, PACKAGE_UPSERT, CORE_UPSERT, 0.8),
        against(lines, CORE_UPSERT, PREPARED),
    ]
