"""notify changed keys

Replaces the one-per-statement "this table changed" notification with one that names the
changed keys, so caching lookups evict what a change changed and nothing else.

- One statement-level trigger per event (INSERT, UPDATE, DELETE), each with its transition
  tables, so a bulk load still sends one notification per statement; TRUNCATE sends one
  without keys ("the whole table").
- A payload is `{"t": table, "s": sequence, "k": [[brand, group_name(, model)], ...]}`;
  past MAX_KEYS keys, or MAX_PAYLOAD bytes (PostgreSQL's limit is 8000), `"k"` is null.
- `s` comes from a one-row counter updated in the writing transaction: its row lock orders
  writers, and a rollback undoes the increment, so in commit order the numbers have no gaps,
  and a listener that sees one knows it missed a notification. One counter serves both
  tables, so writers of the two tables can never deadlock on two counters.

Revision ID: c3f8a1d6e902
Revises: 5a9e3c71b2d4
Create Date: 2026-12-02 11:00:00+00:00
"""

from collections.abc import Sequence

from pricing_store.ops.revisions import apply

revision: str = "c3f8a1d6e902"
down_revision: str | None = "5a9e3c71b2d4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MAX_KEYS = 200
MAX_PAYLOAD = 7900
KEYS = {"brand_groups": ("brand", "group_name"), "models": ("brand", "group_name", "model")}
# Which transition tables each event has.
EVENTS = {
    "INSERT": "REFERENCING NEW TABLE AS new_rows",
    "UPDATE": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "DELETE": "REFERENCING OLD TABLE AS old_rows",
    "TRUNCATE": "",
}

SEND_CHANGE = f"""
CREATE OR REPLACE FUNCTION public.pricing_store_send_change(changed_table text, changed_keys json)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    sequence bigint;
    payload text;
BEGIN
    UPDATE public.pricing_store_change_sequence SET last_value = last_value + 1
    RETURNING last_value INTO sequence;
    payload := json_build_object('t', changed_table, 's', sequence, 'k', changed_keys)::text;
    IF octet_length(payload) > {MAX_PAYLOAD} THEN
        payload := json_build_object('t', changed_table, 's', sequence, 'k', NULL)::text;
    END IF;
    PERFORM pg_notify('pricing_store_changes', payload);
END
$$
"""


def changed_keys(table: str, rows: str) -> str:
    """Aggregate at most MAX_KEYS + 1 distinct keys of `rows` into `keys` and `counted`."""
    columns = ", ".join(KEYS[table])
    return (
        f"SELECT json_agg(json_build_array({columns})), count(*) INTO keys, counted "
        f"FROM ({rows} LIMIT {MAX_KEYS + 1}) AS changed"
    )


def notify_function(table: str) -> str:
    """The trigger function of one table: its changed keys, sent with the next number."""
    columns = ", ".join(KEYS[table])
    new = f"SELECT DISTINCT {columns} FROM new_rows"
    old = f"SELECT DISTINCT {columns} FROM old_rows"
    both = f"SELECT {columns} FROM new_rows UNION SELECT {columns} FROM old_rows"
    return f"""
CREATE OR REPLACE FUNCTION public.pricing_store_notify_{table}() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    keys json;
    counted bigint;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM public.pricing_store_send_change(TG_TABLE_NAME, NULL);
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        {changed_keys(table, new)};
    ELSIF TG_OP = 'DELETE' THEN
        {changed_keys(table, old)};
    ELSE
        {changed_keys(table, both)};
    END IF;
    IF counted = 0 THEN
        RETURN NULL;  -- the statement changed nothing: nothing to tell
    END IF;
    PERFORM public.pricing_store_send_change(
        TG_TABLE_NAME, CASE WHEN counted > {MAX_KEYS} THEN NULL ELSE keys END
    );
    RETURN NULL;
END
$$
"""


def trigger_name(event: str) -> str:
    """`pricing_store_notify_insert` and so on."""
    return f"pricing_store_notify_{event.lower()}"


UPGRADE_STATEMENTS = (
    """
CREATE TABLE IF NOT EXISTS public.pricing_store_change_sequence (
    only_row BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    last_value BIGINT NOT NULL DEFAULT 0
)
""",
    "INSERT INTO public.pricing_store_change_sequence DEFAULT VALUES ON CONFLICT DO NOTHING",
    SEND_CHANGE,
    *(
        statement
        for table in KEYS
        for statement in (
            notify_function(table),
            f"DROP TRIGGER IF EXISTS pricing_store_notify_change ON public.{table}",
            *(
                statement
                for event, transition_tables in EVENTS.items()
                for statement in (
                    f"DROP TRIGGER IF EXISTS {trigger_name(event)} ON public.{table}",
                    f"CREATE TRIGGER {trigger_name(event)} AFTER {event} ON public.{table} "
                    f"{transition_tables} FOR EACH STATEMENT "
                    f"EXECUTE FUNCTION public.pricing_store_notify_{table}()",
                )
            ),
        )
    ),
)

# Back to the previous revision's one trigger per table, naming only the table.
DOWNGRADE_STATEMENTS = (
    *(
        statement
        for table in KEYS
        for statement in (
            *(
                f"DROP TRIGGER IF EXISTS {trigger_name(event)} ON public.{table}"
                for event in EVENTS
            ),
            f"DROP FUNCTION IF EXISTS public.pricing_store_notify_{table}()",
            f"DROP TRIGGER IF EXISTS pricing_store_notify_change ON public.{table}",
            f"CREATE TRIGGER pricing_store_notify_change "
            f"AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON public.{table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION public.pricing_store_notify_change()",
        )
    ),
    "DROP FUNCTION IF EXISTS public.pricing_store_send_change(text, json)",
    "DROP TABLE IF EXISTS public.pricing_store_change_sequence",
)


def upgrade() -> None:
    apply(
        UPGRADE_STATEMENTS,
        "public.brand_groups, public.models: notifications name the changed keys",
    )


def downgrade() -> None:
    apply(
        DOWNGRADE_STATEMENTS,
        "public.brand_groups, public.models: notifications name the table only",
    )
