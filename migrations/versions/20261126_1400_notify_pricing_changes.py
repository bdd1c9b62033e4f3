"""notify pricing changes

Statement-level triggers on both tables send one `pricing_store_changes` notification per
statement (PostgreSQL folds repeats within a transaction and delivers them at commit), so
caching lookups in every process can drop what they hold.

Revision ID: b7c19e0d4f52
Revises: 8e4d5b6c2a31
Create Date: 2026-11-26 14:00:00+00:00
"""

from collections.abc import Sequence

from pricing_store.ops.revisions import apply

revision: str = "b7c19e0d4f52"
down_revision: str | None = "8e4d5b6c2a31"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("brand_groups", "models")

UPGRADE_STATEMENTS = (
    """
CREATE OR REPLACE FUNCTION public.pricing_store_notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pricing_store_changes', TG_TABLE_NAME);
    RETURN NULL;
END
$$
""",
    *(
        statement
        for table in TABLES
        for statement in (
            f"DROP TRIGGER IF EXISTS pricing_store_notify_change ON public.{table}",
            f"CREATE TRIGGER pricing_store_notify_change "
            f"AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON public.{table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION public.pricing_store_notify_change()",
        )
    ),
)

DOWNGRADE_STATEMENTS = (
    *(f"DROP TRIGGER IF EXISTS pricing_store_notify_change ON public.{table}" for table in TABLES),
    "DROP FUNCTION IF EXISTS public.pricing_store_notify_change()",
)


def upgrade() -> None:
    apply(UPGRADE_STATEMENTS, "public.brand_groups, public.models: change notifications in place")


def downgrade() -> None:
    apply(DOWNGRADE_STATEMENTS, "public.brand_groups, public.models: change notifications dropped")
