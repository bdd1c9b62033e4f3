"""What a caching or generating lookup needs of the database, checked before it starts.

A database built without the migrations (`create_all`, a hand-made schema) has the tables
but not the change triggers or the lease table: a cache would then never hear of a change,
and generation would fail at its first missing key. Better to refuse at start.
"""

from __future__ import annotations

from pricing_store.errors import SchemaNotMigratedError
from pricing_store.lookup.connections import DriverPool
from pricing_store.models.lease import LEASES
from pricing_store.ops.owned import MODEL_TABLES, SCHEMA

CHANGE_EVENTS = ("insert", "update", "delete", "truncate")
# The statement triggers that send the cache its change notifications, as table.trigger.
CHANGE_TRIGGERS = frozenset(
    f"{table}.pricing_store_notify_{event}" for table in MODEL_TABLES for event in CHANGE_EVENTS
)
PRESENT_SQL = f"""
    SELECT to_regclass('{LEASES.fullname}') IS NOT NULL,
           coalesce((SELECT array_agg(c.relname || '.' || t.tgname)
                     FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
                     WHERE c.relnamespace = '{SCHEMA}'::regnamespace AND NOT t.tgisinternal),
                    '{{}}')
"""


async def require_schema(pool: DriverPool, *, triggers: bool, leases: bool) -> None:
    """Check that the change triggers (for a cache) and the lease table (for generation) exist.

    Raises:
        SchemaNotMigratedError: naming what is missing.
        DatabaseUnavailableError: if the server cannot be reached.
    """
    has_leases, present = await pool.fetchrow(PRESENT_SQL)
    missing = sorted(CHANGE_TRIGGERS - set(present)) if triggers else []
    if leases and not has_leases:
        missing.append(f"table {LEASES.fullname}")
    if missing:
        raise SchemaNotMigratedError(
            f"missing {', '.join(missing)} (the cache needs the change triggers, generation "
            "the lease table)"
        )
