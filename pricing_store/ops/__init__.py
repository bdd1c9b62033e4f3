"""Operator tools, and what a host application needs to run the package inside its own.

- `upgrade(connection)`: the package's migrations on a host's connection (env.py).
- `include_name`: the filter that keeps a host's autogenerate away from the package's tables.
- `alembic_config()`: the package's Alembic configuration, from any directory.
"""

from pricing_store.ops.migrating import alembic_config, upgrade
from pricing_store.ops.owned import (
    OWNED_FUNCTIONS,
    OWNED_INDEXES,
    OWNED_SEQUENCES,
    OWNED_TABLES,
    VERSION_TABLE,
    include_name,
)

__all__ = [
    "OWNED_FUNCTIONS",
    "OWNED_INDEXES",
    "OWNED_SEQUENCES",
    "OWNED_TABLES",
    "VERSION_TABLE",
    "alembic_config",
    "include_name",
    "upgrade",
]
