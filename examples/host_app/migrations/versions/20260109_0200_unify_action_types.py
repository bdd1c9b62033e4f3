"""unify action types (shared)

Revision ID: 20260109_0200_unify_action_types
Revises: 20260109_0100_add_action_types
Create Date: 2026-01-09 02:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20260109_0200_unify_action_types"
down_revision: str | None = "20260109_0100_add_action_types"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade(tenant: str | None = None) -> None:
    if tenant is None:
        op.execute(
            "INSERT INTO public.action_types (name) VALUES ('sell'), ('buy'), ('swap') "
            "ON CONFLICT (name) DO NOTHING"
        )


def downgrade(tenant: str | None = None) -> None:
    if tenant is None:
        op.execute("DELETE FROM public.action_types WHERE name IN ('sell', 'buy', 'swap')")
