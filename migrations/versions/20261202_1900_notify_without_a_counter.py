"""notify without a counter

The notifications no longer carry a number from a one-row counter: its row lock made every
writer of either table wait for any other writer's commit, and let two transactions that
write each other's keys deadlock. A notification cannot be lost on a live listening
connection (PostgreSQL fails the notifying commit instead); what a cache must detect is a
dead listener, which the listening side does with a heartbeat.

Revision ID: e5b0c4d7a913
Revises: c3f8a1d6e902
Create Date: 2026-12-02 19:00:00+00:00
"""

from collections.abc import Sequence

from pricing_store.ops.revisions import apply

revision: str = "e5b0c4d7a913"
down_revision: str | None = "c3f8a1d6e902"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MAX_PAYLOAD = 7900


def send_change(counter: bool) -> str:
    """The function every trigger calls; with `counter`, the previous revision's."""
    declare = "sequence bigint;\n    payload text;" if counter else "payload text;"
    count = (
        "UPDATE public.pricing_store_change_sequence SET last_value = last_value + 1\n"
        "    RETURNING last_value INTO sequence;"
        if counter
        else ""
    )
    fields = "'t', changed_table, 's', sequence" if counter else "'t', changed_table"
    return f"""
CREATE OR REPLACE FUNCTION public.pricing_store_send_change(changed_table text, changed_keys json)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    {declare}
BEGIN
    {count}
    payload := json_build_object({fields}, 'k', changed_keys)::text;
    IF octet_length(payload) > {MAX_PAYLOAD} THEN
        payload := json_build_object({fields}, 'k', NULL)::text;
    END IF;
    PERFORM pg_notify('pricing_store_changes', payload);
END
$$
"""


UPGRADE_STATEMENTS = (
    send_change(counter=False),
    "DROP TABLE IF EXISTS public.pricing_store_change_sequence",
)

DOWNGRADE_STATEMENTS = (
    """
CREATE TABLE IF NOT EXISTS public.pricing_store_change_sequence (
    only_row BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    last_value BIGINT NOT NULL DEFAULT 0
)
""",
    "INSERT INTO public.pricing_store_change_sequence DEFAULT VALUES ON CONFLICT DO NOTHING",
    send_change(counter=True),
)


def upgrade() -> None:
    apply(UPGRADE_STATEMENTS, "public.brand_groups, public.models: notifications without a counter")


def downgrade() -> None:
    apply(DOWNGRADE_STATEMENTS, "public.brand_groups, public.models: notifications numbered again")
