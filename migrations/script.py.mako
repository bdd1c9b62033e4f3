"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from collections.abc import Sequence

from pricing_store.ops.revisions import apply

revision: str = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}

# Raw, idempotent SQL (IF NOT EXISTS / IF EXISTS), schema-qualified with public, one
# statement per string; every object named as the package's own (see ops/owned.py).
UPGRADE_STATEMENTS: tuple[str, ...] = ()

DOWNGRADE_STATEMENTS: tuple[str, ...] = ()


def upgrade() -> None:
    apply(UPGRADE_STATEMENTS, "${message}: applied")


def downgrade() -> None:
    apply(DOWNGRADE_STATEMENTS, "${message}: reverted")
