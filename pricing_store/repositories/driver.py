"""Running one prepared statement in a session's transaction, through SQLAlchemy's engine.

The one-row writes are SQL written once per model (see `statements`), sent with
`exec_driver_sql`: no statement building, yet every engine event fires (what
OpenTelemetry, Sentry and `echo` hook into), and a connection lost or a call cancelled
half-way is invalidated by SQLAlchemy as for any other statement of the session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession


async def fetch_row(
    session: AsyncSession, sql: str, arguments: Sequence[Any]
) -> Sequence[Any] | None:
    """Run `sql` (with `$n` parameters) in the session's transaction; its first row, or None.

    Pending changes in the session are flushed first, as autoflush would.
    """
    if session.new or session.dirty or session.deleted:
        await session.flush()
    connection = await session.connection()
    result = await connection.exec_driver_sql(sql, tuple(arguments))
    row: Sequence[Any] | None = result.first()
    return row
