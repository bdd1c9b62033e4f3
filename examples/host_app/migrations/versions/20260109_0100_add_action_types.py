"""create action types (shared)

Revision ID: 20260109_0100_add_action_types
Revises:
Create Date: 2026-01-09 01:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20260109_0100_add_action_types"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade(tenant: str | None = None) -> None:
    if tenant is None:
        op.execute(
            "CREATE TABLE public.action_types ("
            "id SERIAL PRIMARY KEY, name VARCHAR(50) NOT NULL, "
            "CONSTRAINT action_types_name_key UNIQUE (name))"
        )


def downgrade(tenant: str | None = None) -> None:
    if tenant is None:
        op.execute("DROP TABLE public.action_types")
