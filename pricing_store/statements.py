"""The SQL of the writes keyed on a table's natural key (`INSERT ... ON CONFLICT`).

Written once per model (and set of given columns) from the table's metadata, with values
as bound parameters, so a call costs no statement building. Each is conflict-free: it never
raises a unique violation, so it leaves the caller's transaction as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Executable,
    Table,
    TextualSelect,
    bindparam,
    select,
    text,
)

from pricing_store.models import BrandGroup, Model

ModelType = type[BrandGroup] | type[Model]
# Bound parameters may not share a column's name in an INSERT's VALUES.
PARAMETER_PREFIX = "value_"


def table_of(model_type: ModelType) -> Table:
    """Return the model's table, typed as the Table it is."""
    return cast(Table, model_type.__table__)


def key_matches(model_type: ModelType, values: Mapping[str, Any]) -> list[ColumnElement[bool]]:
    """`column = value` for each column of the natural key."""
    columns = table_of(model_type).c
    return [columns[field] == values[field] for field in model_type.natural_key]


def updatable_fields(model_type: ModelType) -> list[str]:
    """List the data columns an upsert overwrites: every writable column outside the key."""
    return [field for field in model_type.field_rules if field not in model_type.natural_key]


def on_conflict_update(model_type: ModelType) -> str:
    """`ON CONFLICT ... DO UPDATE` that writes, and stamps `updated_at`, only on a change.

    The target table must be aliased `target`. An unchanged row is not touched at all.
    """
    fields = updatable_fields(model_type)
    return (
        f"ON CONFLICT ON CONSTRAINT {model_type.natural_key_constraint} DO UPDATE "
        f"SET {joined(f'{field} = excluded.{field}' for field in fields)}, updated_at = now() "
        f"WHERE ({joined(f'target.{field}' for field in fields)}) "
        f"IS DISTINCT FROM ({joined(f'excluded.{field}' for field in fields)})"
    )


@cache
def upsert_returning_row(model_type: ModelType, fields: frozenset[str]) -> Executable:
    """Insert or update one row and return it as it now stands, in one statement.

    An unchanged row is not written, so `RETURNING` gives nothing for it; the second branch
    then reads it as it was.
    """
    table = table_of(model_type)
    everything = joined(column.name for column in table.columns)
    sql = f"""
        WITH written AS (
            {insert_values(model_type, fields)}
            {on_conflict_update(model_type)}
            RETURNING {everything}
        )
        SELECT {everything} FROM written
        UNION ALL
        SELECT {everything} FROM {table.fullname}
        WHERE {key_equals_parameters(model_type)} AND NOT EXISTS (SELECT FROM written)
    """
    return select(model_type).from_statement(typed(model_type, sql, fields))


@cache
def insert_or_select(model_type: ModelType, fields: frozenset[str]) -> Executable:
    """Insert one row unless its key exists; return the row and whether it was inserted."""
    table = table_of(model_type)
    everything = joined(column.name for column in table.columns)
    sql = f"""
        WITH inserted AS (
            {insert_values(model_type, fields)}
            ON CONFLICT ON CONSTRAINT {model_type.natural_key_constraint} DO NOTHING
            RETURNING {everything}
        )
        SELECT {everything}, true AS created FROM inserted
        UNION ALL
        SELECT {everything}, false AS created FROM {table.fullname}
        WHERE {key_equals_parameters(model_type)} AND NOT EXISTS (SELECT FROM inserted)
    """
    statement = typed(model_type, sql, fields, created=Boolean)
    return select(model_type, statement.selected_columns.created).from_statement(statement)


def parameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """The bound parameters for column values, named as the statements here name them."""
    return {PARAMETER_PREFIX + field: value for field, value in values.items()}


def insert_values(model_type: ModelType, fields: frozenset[str]) -> str:
    """`INSERT INTO ... AS target (...) VALUES (...)` of the given columns, in table order."""
    table = table_of(model_type)
    given = [column.name for column in table.columns if column.name in fields]
    return (
        f"INSERT INTO {table.fullname} AS target ({joined(given)}) "
        f"VALUES ({joined(f':{PARAMETER_PREFIX}{field}' for field in given)})"
    )


def key_equals_parameters(model_type: ModelType) -> str:
    """`column = :parameter AND ...` over the natural key."""
    return " AND ".join(f"{field} = :{PARAMETER_PREFIX}{field}" for field in model_type.natural_key)


def typed(
    model_type: ModelType, sql: str, fields: frozenset[str], **extra: type[Boolean]
) -> TextualSelect:
    """The SQL as a statement whose parameters and result columns carry the column types."""
    table = table_of(model_type)
    return (
        text(sql)
        .bindparams(
            *(bindparam(PARAMETER_PREFIX + field, type_=table.c[field].type) for field in fields)
        )
        .columns(*table.columns, **extra)
    )


def joined(parts: Iterable[str]) -> str:
    """Comma-separated SQL fragments."""
    return ", ".join(parts)
