"""The SQL of the one-row writes keyed on a table's natural key (`INSERT ... ON CONFLICT`).

Written once per model and set of given columns from the table's metadata, with `$n`
parameters for the driver. Each is conflict-free: it never raises a unique violation, so it
leaves the caller's transaction as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    Column,
    ColumnElement,
    Select,
    Table,
    TextClause,
    UniqueConstraint,
    bindparam,
    select,
)

from pricing_store.models.base import KeyedModel

RowClass = type[KeyedModel]


@dataclass(frozen=True)
class RowStatement:
    """A statement returning whole rows, and the columns its `$1, $2, ...` stand for."""

    sql: str
    fields: tuple[str, ...]

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        """The driver's arguments for these column values; JSONB lists go as JSON text."""
        return [
            json_array(values[field]) if isinstance(values[field], list) else values[field]
            for field in self.fields
        ]


def json_array(strings: list[str]) -> str:
    """A list of strings as JSON text, for a JSONB column.

    Bulk loads encode millions of short lists: those that need no escaping are joined
    directly, which costs a fraction of `json.dumps`.
    """
    text = "".join(strings)
    if '"' in text or "\\" in text or not text.isprintable():
        return json.dumps(strings, ensure_ascii=False)
    return '["' + '","'.join(strings) + '"]' if strings else "[]"


def or_default(value: str, column: Column[Any]) -> str:
    """`value`, or the column's server default where it is NULL (if the column has one).

    The default is cast to the column's type: `server_default="1.0"` is the string the DDL
    quotes; `text(...)` is SQL as it is.
    """
    default = getattr(column.server_default, "arg", None)
    if default is None:
        return value
    if isinstance(default, TextClause):
        written = default.text
    else:
        written = "'{}'".format(str(default).replace("'", "''"))
    return f"coalesce({value}, CAST({written} AS {column.type.compile()}))"


def table_of(row_class: RowClass) -> Table:
    """Return the model's table, typed as the Table it is."""
    return cast(Table, row_class.__table__)


@cache
def key_constraint(row_class: RowClass) -> str:
    """The name of the table's unique constraint on its natural key (declared once, there)."""
    for constraint in table_of(row_class).constraints:
        if not isinstance(constraint, UniqueConstraint):
            continue
        if tuple(column.name for column in constraint.columns) == row_class.natural_key:
            return str(constraint.name)
    raise LookupError(f"{table_of(row_class).name} has no unique constraint on its natural key")


def newest_first(row_class: RowClass) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """The order of pages: newest first, ending in the unique id so that no two rows tie."""
    columns = table_of(row_class).c
    return columns.created_at.desc(), columns.id.desc()


@cache
def find_by_key(row_class: RowClass) -> Select[Any]:
    """Select the row whose natural key equals the bound parameters named after its columns.

    Built once: a lookup then costs SQLAlchemy no statement building.
    """
    return select(row_class).where(*key_parameters(row_class, row_class.natural_key))


def key_parameters(row_class: RowClass, fields: Iterable[str]) -> list[ColumnElement[bool]]:
    """`column = :column` for each of the columns."""
    columns = table_of(row_class).c
    return [columns[field] == bindparam(field) for field in fields]


def updatable_fields(row_class: RowClass) -> list[str]:
    """List the data columns an upsert overwrites: every writable column outside the key."""
    return [field for field in row_class.field_rules if field not in row_class.natural_key]


def on_conflict_update(row_class: RowClass) -> str:
    """`ON CONFLICT ... DO UPDATE` that writes, and stamps `updated_at`, only on a change.

    The target table must be aliased `target`. An unchanged row is not touched at all.
    """
    fields = updatable_fields(row_class)
    return (
        f"ON CONFLICT ON CONSTRAINT {key_constraint(row_class)} DO UPDATE "
        f"SET {joined(f'{field} = excluded.{field}' for field in fields)}, updated_at = now() "
        f"WHERE ({joined(f'target.{field}' for field in fields)}) "
        f"IS DISTINCT FROM ({joined(f'excluded.{field}' for field in fields)})"
    )


@cache
def upsert_returning_row(row_class: RowClass, fields: frozenset[str]) -> RowStatement:
    """Insert or update one row and return it as it now stands.

    An unchanged row is not written, so `RETURNING` gives nothing for it; the second branch
    then reads it as it was.
    """
    given = in_table_order(row_class, fields)
    everything = joined(column.name for column in table_of(row_class).columns)
    sql = f"""
        WITH written AS (
            {insert_values(row_class, given)}
            {on_conflict_update(row_class)}
            RETURNING {everything}
        )
        SELECT {everything} FROM written
        UNION ALL
        SELECT {everything} FROM {table_of(row_class).fullname}
        WHERE {key_equals_arguments(row_class, given)} AND NOT EXISTS (SELECT FROM written)
    """
    return RowStatement(sql, given)


@cache
def insert_or_select(row_class: RowClass, fields: frozenset[str]) -> RowStatement:
    """Insert one row unless its key exists; return the row and, last, whether it was new."""
    given = in_table_order(row_class, fields)
    everything = joined(column.name for column in table_of(row_class).columns)
    sql = f"""
        WITH inserted AS (
            {insert_values(row_class, given)}
            ON CONFLICT ON CONSTRAINT {key_constraint(row_class)} DO NOTHING
            RETURNING {everything}
        )
        SELECT {everything}, true FROM inserted
        UNION ALL
        SELECT {everything}, false FROM {table_of(row_class).fullname}
        WHERE {key_equals_arguments(row_class, given)} AND NOT EXISTS (SELECT FROM inserted)
    """
    return RowStatement(sql, given)


def in_table_order(row_class: RowClass, fields: frozenset[str]) -> tuple[str, ...]:
    """The given columns in the table's order, so one set of columns makes one statement."""
    return tuple(column.name for column in table_of(row_class).columns if column.name in fields)


def insert_values(row_class: RowClass, given: tuple[str, ...]) -> str:
    """`INSERT INTO ... AS target (...) VALUES ($1, ...)` of the given columns."""
    placeholders = joined(f"${number}" for number in range(1, len(given) + 1))
    table = table_of(row_class).fullname
    return f"INSERT INTO {table} AS target ({joined(given)}) VALUES ({placeholders})"


def key_equals_arguments(row_class: RowClass, given: tuple[str, ...]) -> str:
    """`column = $n AND ...` over the natural key, reusing the INSERT's arguments."""
    return same_key(row_class.natural_key, parameters(given))


def same_key(fields: Sequence[str], value_of: Callable[[str], str], alias: str = "") -> str:
    """`alias.brand = <value of brand> AND ...`: the one way a key's match is written."""
    column = f"{alias}.{{}}" if alias else "{}"
    return " AND ".join(f"{column.format(field)} = {value_of(field)}" for field in fields)


def parameters(order: Sequence[str]) -> Callable[[str], str]:
    """A column's `$n`, when the arguments are given in `order`."""
    return lambda field: f"${order.index(field) + 1}"


def columns_of(alias: str) -> Callable[[str], str]:
    """A column of the row aliased `alias`."""
    return lambda field: f"{alias}.{field}"


def joined(parts: Iterable[str]) -> str:
    """Comma-separated SQL fragments."""
    return ", ".join(parts)
