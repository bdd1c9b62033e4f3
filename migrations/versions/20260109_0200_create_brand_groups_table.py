"""create brand_groups table

Revision ID: 3f1c2a9b7d10
Revises:
Create Date: 2026-01-09 02:00:00+00:00
"""

from collections.abc import Sequence

from alembic import context, op

from pricing_store.ops.migrating import refuse_removal_if_referenced
from pricing_store.ops.revisions import apply

revision: str = "3f1c2a9b7d10"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE_STATEMENTS = (
    """
CREATE TABLE IF NOT EXISTS public.brand_groups (
    id SERIAL PRIMARY KEY,
    brand VARCHAR(100) NOT NULL,
    group_name VARCHAR(50) NOT NULL,
    base_price DECIMAL(10,2) NOT NULL
        CONSTRAINT ck_brand_groups_base_price
        CHECK (base_price >= 5.00 AND base_price <= 500.00),
    expected_origins JSONB DEFAULT '[]'::jsonb NOT NULL,
    expected_decades JSONB DEFAULT '[]'::jsonb NOT NULL,
    expected_trends JSONB DEFAULT '[]'::jsonb NOT NULL,
    condition_sensitivity DECIMAL(3,2) NOT NULL DEFAULT 1.0
        CONSTRAINT ck_brand_groups_sensitivity
        CHECK (condition_sensitivity >= 0.5 AND condition_sensitivity <= 1.5),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL,

    CONSTRAINT uq_brand_groups_brand_group UNIQUE (brand, group_name)
)
""",
    "CREATE INDEX IF NOT EXISTS idx_brand_groups_brand ON public.brand_groups(brand)",
    "CREATE INDEX IF NOT EXISTS idx_brand_groups_group ON public.brand_groups(group_name)",
    "CREATE INDEX IF NOT EXISTS idx_brand_groups_created_at "
    "ON public.brand_groups(created_at DESC)",
)

DOWNGRADE_STATEMENTS = ("DROP TABLE IF EXISTS public.brand_groups",)


def upgrade() -> None:
    apply(UPGRADE_STATEMENTS, "public.brand_groups: table, constraints and indexes in place")


def downgrade() -> None:
    if not context.is_offline_mode():
        refuse_removal_if_referenced(op.get_bind(), ["brand_groups"])
    apply(DOWNGRADE_STATEMENTS, "public.brand_groups: dropped")
