"""`make bench`: pricing_store against raw asyncpg, on the same server, in the same run.

Prints one table: operation, contender, throughput, and the ratio to the first contender
(raw asyncpg, unless the line says otherwise). Contenders take turns round after round and
the medians are reported, so a passing hiccup of the machine does not decide a ratio. The
server is found as the tests find theirs (PRICING_STORE_TEST_DATABASE_URL, Docker, or the
embedded wheel), in a database of its own that is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import sys
import warnings
from pathlib import Path

from alembic import command
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import print_table
from bench.reads import bench_reads, read_goals
from bench.writes import bench_bulk, bench_single_upsert, write_goals
from pricing_store import create_engine
from tests.helpers import alembic_config
from tests.provision import postgres_server, server_source, throwaway_database


def migrate(connection: Connection) -> None:
    """Build the schema with the migrations, as the tests do."""
    command.upgrade(alembic_config(connection), "head")


async def migrated(url: URL) -> str:
    """Migrate the throwaway database; return the server's version, for the header."""
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(migrate)
        version = await connection.scalar(text("SHOW server_version"))
    await engine.dispose()
    return str(version)


async def main() -> None:
    """Run every benchmark on a throwaway database and print the table."""
    # The embedded server asks platformdirs for a runtime folder; the fallback is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    with postgres_server() as server:
        async with throwaway_database(server, prefix="pricing_store_bench") as url:
            version = await migrated(url)
            # Ratios depend on the server and machine: say which ones they come from.
            print(f"PostgreSQL {version}, found by {server_source()}, {os.cpu_count()} cores")
            writes = await bench_bulk(url)
            writes += await bench_single_upsert(url)
            reads = await bench_reads(url)
            print_table(writes + reads)
            # Each goal, then the line it is measured against where that is not the driver.
            for goal in write_goals(writes) + read_goals(reads):
                print(goal)


if __name__ == "__main__":
    asyncio.run(main())
