"""create models table

Revision ID: 8e4d5b6c2a31
Revises: 3f1c2a9b7d10
Create Date: 2026-01-09 02:01:00+00:00
"""

from collections.abc import Sequence

from alembic import context, op

from pricing_store.ops.migrating import refuse_removal_if_referenced
from pricing_store.ops.revisions import apply

revision: str = "8e4d5b6c2a31"
down_revision: str | None = "3f1c2a9b7d10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE_STATEMENTS = (
    """
CREATE TABLE IF NOT EXISTS public.models (
    id SERIAL PRIMARY KEY,
    brand VARCHAR(100) NOT NULL,
    group_name VARCHAR(50) NOT NULL,
    model VARCHAR(100) NOT NULL,
    coefficient DECIMAL(4,2) NOT NULL DEFAULT 1.0
        CONSTRAINT ck_models_coefficient
        CHECK (coefficient >= 0.5 AND coefficient <= 3.0),
    expected_features JSONB DEFAULT '[]'::jsonb NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL,

    CONSTRAINT uq_models_brand_group_model UNIQUE (brand, group_name, model)
)
""",
    "CREATE INDEX IF NOT EXISTS idx_models_brand ON public.models(brand)",
    "CREATE INDEX IF NOT EXISTS idx_models_group ON public.models(group_name)",
    "CREATE INDEX IF NOT EXISTS idx_models_brand_group ON public.models(brand, group_name)",
    "CREATE INDEX IF NOT EXISTS idx_models_created_at ON public.models(created_at DESC)",
)

DOWNGRADE_STATEMENTS = ("DROP TABLE IF EXISTS public.models",)


def upgrade() -> None:
    apply(UPGRADE_STATEMENTS, "public.models: table, constraints and indexes in place")


def downgrade() -> None:
    if not context.is_offline_mode():
        refuse_removal_if_referenced(op.get_bind(), ["models"])
    apply(DOWNGRADE_STATEMENTS, "public.models: dropped")
