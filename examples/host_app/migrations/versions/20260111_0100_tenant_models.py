"""create models (every tenant): a tenant's own catalogue, named like pricing_store's table

Revision ID: 20260111_0100_tenant_models
Revises: 20260110_0100_create_products
Create Date: 2026-01-11 01:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20260111_0100_tenant_models"
down_revision: str | None = "20260110_0100_create_products"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade(tenant: str | None = None) -> None:
    if tenant is not None:
        op.execute(
            f"CREATE TABLE {tenant}.models (id SERIAL PRIMARY KEY, "
            "brand VARCHAR(100) NOT NULL, name VARCHAR(100) NOT NULL)"
        )
        op.execute(f"CREATE INDEX idx_models_brand ON {tenant}.models (brand)")


def downgrade(tenant: str | None = None) -> None:
    if tenant is not None:
        op.execute(f"DROP TABLE {tenant}.models")
