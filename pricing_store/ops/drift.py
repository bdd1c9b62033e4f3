"""Comparing the models with a migrated database: the one set of rules env.py and tests share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from pricing_store.models import Base
from pricing_store.ops.owned import MODEL_TABLES, SCHEMA

IncludeName = Callable[[str | None, str, Any], bool]


def only_the_models(default_schema: str | None) -> IncludeName:
    """Compare only the models' tables in `public`: the schema is shared with other code.

    Alembic calls the connection's default schema (the first of its `search_path`) None
    and every other by name; `public` is picked out either way, so a role whose
    `search_path` starts with a tenant's schema sees the same comparison.
    """

    def include(name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "schema":
            return (name or default_schema) == SCHEMA
        return type_ != "table" or name in MODEL_TABLES

    return include


def compare_options(connection: Connection) -> dict[str, Any]:
    """Alembic's options for comparing the models with the database on `connection`."""
    return {
        "compare_server_default": True,
        "include_schemas": True,
        "include_name": only_the_models(connection.dialect.default_schema_name),
    }


def schema_differences(connection: Connection) -> list[Any]:
    """Alembic's list of differences between the models and the database; empty when none."""
    context = MigrationContext.configure(connection, opts=compare_options(connection))
    return list(compare_metadata(context, Base.metadata))
