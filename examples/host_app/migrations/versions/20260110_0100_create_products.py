"""create products (every tenant), referencing pricing_store's brand_groups

Revision ID: 20260110_0100_create_products
Revises: 20260109_0200_unify_action_types
Create Date: 2026-01-10 01:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20260110_0100_create_products"
down_revision: str | None = "20260109_0200_unify_action_types"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade(tenant: str | None = None) -> None:
    if tenant is not None:
        # public.brand_groups is there: env.py runs pricing_store.ops.upgrade first.
        op.execute(
            f"CREATE TABLE {tenant}.products ("
            "id SERIAL PRIMARY KEY, title VARCHAR(200) NOT NULL, "
            "brand_group_id INTEGER NOT NULL, model VARCHAR(100), "
            "condition NUMERIC(3, 2) NOT NULL, "
            "CONSTRAINT products_brand_group_id_fkey FOREIGN KEY (brand_group_id) "
            "REFERENCES public.brand_groups (id))"
        )
        op.execute(f"CREATE INDEX ix_products_brand_group_id ON {tenant}.products (brand_group_id)")


def downgrade(tenant: str | None = None) -> None:
    if tenant is not None:
        op.execute(f"DROP TABLE {tenant}.products")
