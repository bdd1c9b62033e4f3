"""Single-statement writes keyed on a table's natural key (`INSERT ... ON CONFLICT`).

Each returns the row in one round trip, with no unique violation to recover from: a
conflict-free statement leaves the caller's transaction as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Executable,
    Table,
    exists,
    false,
    func,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import Insert
from sqlalchemy.dialects.postgresql import insert as pg_insert

from pricing_store.models import BrandGroup, Model

ModelType = type[BrandGroup] | type[Model]


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


def upsert_on_conflict(model_type: ModelType, insert: Insert) -> Insert:
    """Add `ON CONFLICT ... DO UPDATE` that writes, and stamps `updated_at`, only on change."""
    columns = table_of(model_type).c
    fields = updatable_fields(model_type)
    changed = tuple_(*(columns[field] for field in fields)).is_distinct_from(
        tuple_(*(insert.excluded[field] for field in fields))
    )
    return insert.on_conflict_do_update(
        constraint=model_type.natural_key_constraint,
        set_={**{field: insert.excluded[field] for field in fields}, "updated_at": func.now()},
        where=changed,
    )


def upsert_returning_row(model_type: ModelType, values: Mapping[str, Any]) -> Executable:
    """Insert or update one row and return it as it now stands, in one statement.

    An unchanged row is not written, so `RETURNING` gives nothing for it; the second branch
    then reads it as it was.
    """
    table = table_of(model_type)
    written = (
        upsert_on_conflict(model_type, pg_insert(table).values(dict(values)))
        .returning(*table.c)
        .cte("written")
    )
    unchanged = select(*table.c).where(*key_matches(model_type, values), ~exists(written.select()))
    return select(model_type).from_statement(union_all(written.select(), unchanged))


def insert_or_select(model_type: ModelType, values: Mapping[str, Any]) -> Executable:
    """Insert one row unless its key exists; return the row and whether it was inserted."""
    table = table_of(model_type)
    inserted = (
        pg_insert(table)
        .values(dict(values))
        .on_conflict_do_nothing(constraint=model_type.natural_key_constraint)
        .returning(*table.c)
        .cte("inserted")
    )
    existing = select(*table.c, false().label("created")).where(
        *key_matches(model_type, values), ~exists(inserted.select())
    )
    both = union_all(select(*inserted.c, true().label("created")), existing)
    return select(model_type, both.selected_columns.created).from_statement(both)
