"""What the package owns in a host's database, and the autogenerate filter that leaves it alone.

Everything the package creates lives in `public` and is named as its own: the two tables of
the models, the functions of change notifications, the table of generation leases, and the
version table its revisions are recorded in (never the host's `alembic_version`).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, text

from pricing_store.models import Base
from pricing_store.models.base import SCHEMA as SCHEMA
from pricing_store.models.lease import LEASES

# The package's Alembic version table, beside (never instead of) a host's `alembic_version`.
VERSION_TABLE = "pricing_store_alembic_version"
MODEL_TABLES = frozenset(table.name for table in Base.metadata.sorted_tables)
LEASE_TABLE = LEASES.name
OWNED_TABLES = MODEL_TABLES | {LEASE_TABLE, VERSION_TABLE}
OWNED_INDEXES = frozenset(
    name
    for table in Base.metadata.sorted_tables
    for name in (
        *(index.name for index in table.indexes),
        *(constraint.name for constraint in table.constraints),
    )
    if isinstance(name, str)
) | {f"{LEASE_TABLE}_pkey", f"{VERSION_TABLE}_pkc"}
OWNED_SEQUENCES = frozenset(f"{table}_id_seq" for table in MODEL_TABLES)
OWNED_FUNCTIONS = frozenset(
    {
        "pricing_store_notify_change",
        "pricing_store_send_change",
        *(f"pricing_store_notify_{table}" for table in MODEL_TABLES),
    }
)
# Each kind of object Alembic's autogenerate asks about, and the names of ours among them.
OWNED_NAMES: Mapping[str, frozenset[str]] = {
    "table": OWNED_TABLES,
    "index": OWNED_INDEXES,
    "unique_constraint": OWNED_INDEXES,
    "sequence": OWNED_SEQUENCES,
}


def include_name(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
    """Alembic's `include_name` hook for a host's autogenerate: False for what the package owns.

    Pass it as `context.configure(include_name=pricing_store.ops.include_name)`, or call it
    from your own filter. Objects of the package (in `public`) are left out, so
    autogenerate proposes nothing for them; everything else is compared as usual. Alembic
    names no schema for objects it reflects through the `search_path`: during an env.py run
    the filter asks the connection which schema such a name resolves to, so a tenant's own
    `models` table is compared while `public.brand_groups`, reached through the same
    `search_path`, is left out. Outside an env.py run, no schema means `public`.
    """
    if type_ == "schema":
        return True  # the host's filter decides which schemas to compare
    schema = parent_names.get("schema_name")
    if schema is None:
        relation = name if type_ in ("table", "sequence") else parent_names.get("table_name")
        schema = resolved_schema(relation or name)
    if schema != SCHEMA:
        return True
    if parent_names.get("table_name") in OWNED_TABLES:
        return False  # a column, index or constraint of one of the package's tables
    return name not in OWNED_NAMES.get(type_, frozenset())


# The schema each name resolved to, per migration context (a pass's own: a host may
# change the search_path between passes on one connection).
_resolved: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()
RESOLVE_SQL = """
    SELECT namespace.nspname FROM pg_class AS relation
    JOIN pg_namespace AS namespace ON namespace.oid = relation.relnamespace
    WHERE relation.oid = to_regclass(quote_ident(:name))
"""


def resolved_schema(name: str | None) -> str:
    """The schema an unqualified relation name resolves to in the running env.py.

    Read on its connection (its `search_path`), as Alembic's reflection reached it;
    `public` when no env.py runs, it runs offline, or the name is no relation.
    """
    from alembic import context

    try:
        migration = context.get_context()
    except Exception:  # no env.py runs, or it has not configured its context yet
        return SCHEMA
    connection = migration.connection
    if not isinstance(connection, Connection) or name is None:
        return SCHEMA
    resolved = _resolved.setdefault(migration, {})
    if name not in resolved:
        found = connection.execute(text(RESOLVE_SQL), {"name": name}).scalar()
        resolved[name] = found or SCHEMA
    return resolved[name]
