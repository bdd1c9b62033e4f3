"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

import sys
from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}

# Raw, idempotent SQL (IF NOT EXISTS / IF EXISTS), schema-qualified with public.
# One statement per string: asyncpg prepares each, and a prepared statement holds one.
UPGRADE_STATEMENTS: tuple[str, ...] = ()

DOWNGRADE_STATEMENTS: tuple[str, ...] = ()


def upgrade() -> None:
    for statement in UPGRADE_STATEMENTS:
        op.execute(text(statement))
    print("${message}: applied", file=sys.stderr)


def downgrade() -> None:
    for statement in DOWNGRADE_STATEMENTS:
        op.execute(text(statement))
    print("${message}: reverted", file=sys.stderr)
