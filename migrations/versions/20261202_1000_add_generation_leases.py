"""add generation leases

One row per key being generated on demand (an LLM call, seconds long): the process that
claims it generates, every other waits. Claimed, renewed and released in short autocommit
statements, so nothing stays open while the generator runs and PgBouncer's transaction
mode is no obstacle; a lease whose owner died expires within seconds.

Revision ID: 5a9e3c71b2d4
Revises: 4d2a8f61c0e9
Create Date: 2026-12-02 10:00:00+00:00
"""

from collections.abc import Sequence

from pricing_store.ops.revisions import apply

revision: str = "5a9e3c71b2d4"
down_revision: str | None = "4d2a8f61c0e9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE_STATEMENTS = (
    """
CREATE TABLE IF NOT EXISTS public.pricing_store_generation_leases (
    lease_key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at TIMESTAMP WITH TIME ZONE NOT NULL
)
""",
)

DOWNGRADE_STATEMENTS = ("DROP TABLE IF EXISTS public.pricing_store_generation_leases",)


def upgrade() -> None:
    apply(UPGRADE_STATEMENTS, "public.pricing_store_generation_leases: in place")


def downgrade() -> None:
    apply(DOWNGRADE_STATEMENTS, "public.pricing_store_generation_leases: dropped")
