"""What every revision of the package does: run its statements, then say so in one line."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from alembic import op
from sqlalchemy import text


def apply(statements: Iterable[str], done: str) -> None:
    """Run raw SQL statements in the running migration, one per execute, then print `done`.

    One statement per execute: asyncpg prepares each, and a prepared statement holds one.
    """
    for statement in statements:
        op.execute(text(statement))
    print(done, file=sys.stderr)
