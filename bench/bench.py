"""`make bench`: pricing_store against raw asyncpg on the same server, in the same run.

Prints one table: operation, contender, throughput, and the ratio to raw asyncpg. The server
is found as the tests find theirs (PRICING_STORE_TEST_DATABASE_URL, Docker, or embedded), in
a database of its own that is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from sqlalchemy import Connection
from sqlalchemy.engine import URL

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pricing_store import BrandGroupRepository, create_engine, create_session_factory
from tests.conftest import alembic_config
from tests.provision import asyncpg_dsn, postgres_server, throwaway_database

BULK_ROWS = 50_000
SINGLE_CALLS = 2_000
REPEATS = 3

COLUMNS = (
    "brand, group_name, base_price, expected_origins, expected_decades, expected_trends, "
    "condition_sensitivity"
)
DATA = (
    "base_price",
    "expected_origins",
    "expected_decades",
    "expected_trends",
    "condition_sensitivity",
)
UPSERT_SQL = (
    f"INSERT INTO public.brand_groups ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) "
    "ON CONFLICT ON CONSTRAINT uq_brand_groups_brand_group DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in DATA)
    + ", updated_at = now() WHERE ("
    + ", ".join(f"brand_groups.{c}" for c in DATA)
    + ") IS DISTINCT FROM ("
    + ", ".join(f"EXCLUDED.{c}" for c in DATA)
    + ")"
)


@dataclass
class Line:
    """One row of the printed table."""

    operation: str
    contender: str
    per_second: float
    unit: str


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
    """The positional record raw asyncpg needs; JSONB goes as JSON text."""
    return (
        item["brand"],
        item["group_name"],
        item["base_price"],
        json.dumps(item.get("expected_origins", [])),
        json.dumps(item.get("expected_decades", [])),
        json.dumps(item.get("expected_trends", [])),
        1,
    )


async def reset(connection: asyncpg.Connection) -> None:
    """Empty the table and load the existing half."""
    await connection.execute("TRUNCATE public.brand_groups")
    existing = [as_record(item) for item in bulk_items(25)[: BULK_ROWS // 2]]
    await connection.copy_records_to_table(
        "brand_groups", schema_name="public", records=existing, columns=COLUMNS.split(", ")
    )


async def best_of(
    run: Callable[[], Awaitable[None]], setup: Callable[[], Awaitable[None]]
) -> float:
    """The fastest of a few runs, each after its own set-up, in seconds."""
    timings = []
    for _ in range(REPEATS):
        await setup()
        started = time.perf_counter()
        await run()
        timings.append(time.perf_counter() - started)
    return min(timings)


async def bench_bulk(url: URL, lines: list[Line]) -> None:
    """50k brand groups, half new and half existing with a changed price."""
    raw = await asyncpg.connect(asyncpg_dsn(url))
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    price = 30

    async def setup() -> None:
        await reset(raw)

    async def raw_executemany() -> None:
        records = [as_record(item) for item in bulk_items(price)]
        async with raw.transaction():
            await raw.executemany(UPSERT_SQL, records)

    async def package_bulk() -> None:
        items = bulk_items(price)
        async with sessions.begin() as session:
            await BrandGroupRepository(session).bulk_upsert(items)

    async def raw_copy() -> None:
        records = [as_record(item) for item in bulk_items(price)]
        async with raw.transaction():
            await raw.execute("TRUNCATE public.brand_groups")
            await raw.copy_records_to_table(
                "brand_groups", schema_name="public", records=records, columns=COLUMNS.split(", ")
            )

    for contender, run in [
        ("raw asyncpg executemany", raw_executemany),
        ("pricing_store bulk_upsert", package_bulk),
        ("raw asyncpg COPY (insert only)", raw_copy),
    ]:
        seconds = await best_of(run, setup)
        lines.append(Line("bulk upsert 50k brand groups", contender, BULK_ROWS / seconds, "rows/s"))
    await raw.close()
    await engine.dispose()


async def bench_single_upsert(url: URL, lines: list[Line]) -> None:
    """One-row upserts in one transaction, over 100 keys whose prices keep changing."""
    raw = await asyncpg.connect(asyncpg_dsn(url))
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    statement = await raw.prepare(UPSERT_SQL + " RETURNING *")
    items = [
        {"brand": f"Single {number % 100}", "group_name": "jeans", "base_price": 20 + number % 7}
        for number in range(SINGLE_CALLS)
    ]

    async def setup() -> None:
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

    for contender, run in [
        ("raw asyncpg prepared fetchrow", raw_upsert),
        ("pricing_store upsert", package_upsert),
    ]:
        seconds = await best_of(run, setup)
        lines.append(Line("upsert one row", contender, SINGLE_CALLS / seconds, "calls/s"))
    await raw.close()
    await engine.dispose()


def print_table(lines: list[Line]) -> None:
    """Print the table; each ratio is against the first contender of its operation."""
    baseline: dict[str, float] = {}
    print(f"{'operation':<30} {'contender':<34} {'throughput':>16}  {'ratio':>6}")
    for line in lines:
        reference = baseline.setdefault(line.operation, line.per_second)
        print(
            f"{line.operation:<30} {line.contender:<34} "
            f"{line.per_second:>10,.0f} {line.unit:<6} {line.per_second / reference:>5.2f}x"
        )


def migrate(connection: Connection) -> None:
    """Build the schema with the migrations, as the tests do."""
    command.upgrade(alembic_config(connection), "head")


async def main() -> None:
    """Run every benchmark on a throwaway database and print the table."""
    with postgres_server() as server:
        async with throwaway_database(server, prefix="pricing_store_bench") as url:
            engine = create_engine(url)
            async with engine.begin() as connection:
                await connection.run_sync(migrate)
            await engine.dispose()
            lines: list[Line] = []
            await bench_bulk(url, lines)
            await bench_single_upsert(url, lines)
            print_table(lines)


if __name__ == "__main__":
    asyncio.run(main())
