"""What the package owns in a host's database, and the autogenerate filter that leaves it alone.

Everything the package creates lives in `public` and is named as its own: the two tables of
the models, the functions of change notifications, the table of generation leases, and the
version table its revisions are recorded in (never the host's `alembic_version`).
"""

from __future__ import annotations

from collections.abc import Mapping

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
    names no schema for objects of the pass's default schema: those are the package's only
    when that schema is `public` (a tenant pass whose `search_path` is the tenant compares
    the tenant's own `models` table).
    """
    schema = parent_names.get("schema_name")
    if (schema if schema is not None else default_schema()) != SCHEMA:
        return True
    if parent_names.get("table_name") in OWNED_TABLES:
        return False  # a column, index or constraint of one of the package's tables
    return name not in OWNED_NAMES.get(type_, frozenset())


def default_schema() -> str:
    """The schema Alembic's running comparison calls default (reports with no name).

    Alembic takes it from the connection's dialect, as read when the connection was
    opened; outside a migration context (or offline), `public`.
    """
    from alembic import context

    try:
        connection = context.get_context().connection
    except (NameError, AttributeError):  # no env.py is running: nothing to ask
        return SCHEMA
    dialect = getattr(connection, "dialect", None)
    return getattr(dialect, "default_schema_name", None) or SCHEMA
