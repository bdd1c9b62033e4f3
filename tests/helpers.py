"""Small helpers the tests share: statements on a database in a connection of their own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from pricing_store.db import create_engine


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
