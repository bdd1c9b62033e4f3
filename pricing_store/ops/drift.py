"""Comparing the models with a migrated database: the one set of rules env.py and tests share."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from pricing_store.models import Base

OWN_TABLES = frozenset(table.name for table in Base.metadata.sorted_tables)


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Compare only this package's tables: `public` is shared with other code."""
    return type_ != "table" or name in OWN_TABLES


COMPARE_OPTIONS: dict[str, Any] = {
    "compare_server_default": True,
    "include_name": include_name,
}


def schema_differences(connection: Connection) -> list[Any]:
    """Alembic's list of differences between the models and the database; empty when none."""
    context = MigrationContext.configure(connection, opts=COMPARE_OPTIONS)
    return list(compare_metadata(context, Base.metadata))
