"""add keyset paging indexes

Pages are ordered by (created_at DESC, id DESC); with this index a page after a cursor is
one index range scan, however deep, even when many rows share one created_at.

Revision ID: 4d2a8f61c0e9
Revises: b7c19e0d4f52
Create Date: 2026-11-26 14:01:00+00:00
"""

from collections.abc import Sequence

from pricing_store.ops.revisions import apply

revision: str = "4d2a8f61c0e9"
down_revision: str | None = "b7c19e0d4f52"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("brand_groups", "models")

UPGRADE_STATEMENTS = tuple(
    f"CREATE INDEX IF NOT EXISTS idx_{table}_created_at_id "
    f"ON public.{table}(created_at DESC, id DESC)"
    for table in TABLES
)

DOWNGRADE_STATEMENTS = tuple(
    f"DROP INDEX IF EXISTS public.idx_{table}_created_at_id" for table in TABLES
)


def upgrade() -> None:
    apply(UPGRADE_STATEMENTS, "public.brand_groups, public.models: keyset paging indexes in place")


def downgrade() -> None:
    apply(DOWNGRADE_STATEMENTS, "public.brand_groups, public.models: keyset paging indexes dropped")
