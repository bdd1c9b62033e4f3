"""What the tests share: the project's paths and revisions, statements on a database in a
connection of their own, waiting for a condition, and a lookup that counts its reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from pricing_store import PricingLookup
from pricing_store.db import create_engine

ROOT = Path(__file__).resolve().parents[1]


def alembic_config(connection: Any = None) -> Config:
    """The project's Alembic config, optionally handing `connection` to env.py."""
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_head(connection: Connection) -> None:
    """Run every revision on a sync connection (called through `run_sync`)."""
    command.upgrade(alembic_config(connection), "head")


# Every revision, oldest first, as the migrations directory has them.
REVISIONS = [
    script.revision
    for script in reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions()))
]
HEAD = REVISIONS[-1]
SEED_TABLES = "8e4d5b6c2a31"  # the revision that completes the seed's two tables
NOTIFICATIONS = "b7c19e0d4f52"  # the revision before the keyset paging indexes
LEASES = "5a9e3c71b2d4"
TABLES_AT_HEAD = {
    "pricing_store_alembic_version",
    "brand_groups",
    "models",
    "pricing_store_generation_leases",
}


async def fetch(url: URL, sql: str, **parameters: Any) -> list[tuple[Any, ...]]:
    """The rows of one statement."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(text(sql), parameters)
            return [tuple(row) for row in result]
    finally:
        await engine.dispose()


async def execute(url: URL, *statements: str) -> None:
    """Run statements in one committed transaction."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def tables_in(url: URL, schema: str) -> set[str]:
    """The names of the tables in `schema`."""
    rows = await fetch(url, "SELECT tablename FROM pg_tables WHERE schemaname = :s", s=schema)
    return {row[0] for row in rows}


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 1.0) -> float:
    """Seconds until `check()` holds; fails the test if it does not within `within`."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < within, f"not true within {within} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


class Counted(PricingLookup):
    """A lookup that records every statement its connections send about the tables.

    It reads through an engine of its own, whose connect event adds asyncpg's query
    logger to each connection the lookup opens.
    """

    def __init__(self, engine: AsyncEngine, **options: Any) -> None:
        self.sent: list[str] = []
        self._counting = create_engine(engine.url, poolclass=NullPool)

        def log(logged: Any) -> None:
            if "public.brand_groups" in logged.query:
                self.sent.append(logged.query)

        def on_connect(connection: Any, record: Any) -> None:
            connection.driver_connection.add_query_logger(log)

        event.listen(self._counting.sync_engine, "connect", on_connect)
        listen_to = options.pop("listen_to", None)
        super().__init__(self._counting, listen_to=listen_to, **options)

    async def close(self) -> None:
        await super().close()
        await self._counting.dispose()
