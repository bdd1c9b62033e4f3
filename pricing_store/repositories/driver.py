"""Running one statement on a session's own asyncpg connection, inside its transaction.

The hot one-row writes go to the driver directly: the same connection and transaction as
the session, without SQLAlchemy's per-statement machinery, which costs several times the
round trip itself. (Statements sent this way do not reach SQLAlchemy's cursor events.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from pricing_store.db import log_statement


async def fetch_row(
    session: AsyncSession, sql: str, arguments: Sequence[Any]
) -> Sequence[Any] | None:
    """Run `sql` in the session's transaction and return its first row, or None.

    Pending changes in the session are flushed first, as autoflush would.
    """
    if session.new or session.dirty or session.deleted:
        await session.flush()
    log_statement(sql, arguments)
    connection = await session.connection()
    # The session's transaction holds the connection open, so reaching the driver's own
    # takes no I/O, and no greenlet, whose switches would cost more than the look-up.
    sync = connection.sync_connection
    assert sync is not None  # session.connection() returns a started connection
    driver: Any = sync.connection.driver_connection
    if driver.is_in_transaction():
        row: Sequence[Any] | None = await driver.fetchrow(sql, *arguments)
        return row
    # SQLAlchemy sends BEGIN lazily, with the first statement through its own cursor.
    return await connection.run_sync(fetch_row_through_cursor, sql, arguments)


def fetch_row_through_cursor(
    connection: Connection, sql: str, arguments: Sequence[Any]
) -> Sequence[Any] | None:
    """The same through the DBAPI cursor, which begins the session's transaction."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql, arguments)
        row: Sequence[Any] | None = cursor.fetchone()
        return row
    finally:
        cursor.close()
