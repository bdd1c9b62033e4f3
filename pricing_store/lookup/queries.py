"""The lookup's SQL, written from the tables' metadata: a new column needs no edit here.

A reference's row is PriceReference's fields, in order and first (the reference is read by
position): the Brand×Group's columns, the model asked for, the model's columns outside
the key (their defaults when it has no row) and whether it has one. JSONB comes as its
JSON text, which the lookup parses once per distinct text.
"""

from __future__ import annotations

import contextlib
from typing import Any

import asyncpg
from sqlalchemy import Column, Table
from sqlalchemy.dialects.postgresql import JSONB

from pricing_store.db import DriverSettings
from pricing_store.errors import raise_translated
from pricing_store.lookup.reference import FIELDS
from pricing_store.models import BrandGroup, Model
from pricing_store.repositories.statements import (
    columns_of,
    or_default,
    parameters,
    same_key,
    table_of,
)

BRAND_GROUPS: Table = table_of(BrandGroup)
MODELS: Table = table_of(Model)
# The columns each table gives a reference, by name.
GROUP_FIELDS = tuple(BrandGroup.field_rules)
MODEL_FIELDS = tuple(name for name in Model.field_rules if name not in Model.natural_key)


def as_text_if_json(column: Column[Any], sql: str) -> str:
    """JSONB as its JSON text; anything else as it is."""
    return f"({sql})::text" if isinstance(column.type, JSONB) else sql


def model_column(column: Column[Any]) -> str:
    """A model's column, or its default when the model has no row.

    A coefficient's default, 1.00, is the neutral one; a list's is empty.
    """
    return as_text_if_json(column, or_default(f"m.{column.name}", column))


def reference_fields(model: str) -> str:
    """PriceReference's fields, in order, each under its own name; `model`: the one asked."""

    def field(name: str) -> str:
        if name in GROUP_FIELDS:
            column = BRAND_GROUPS.c[name]
            return as_text_if_json(column, f"bg.{name}")
        if name == "model":
            return model
        if name == "model_found":
            return "m.id IS NOT NULL"
        if name in MODEL_FIELDS:
            return model_column(MODELS.c[name])
        raise LookupError(f"PriceReference.{name} is no column of the lookup's tables")

    return ", ".join(f"{field(name)} AS {name}" for name in FIELDS)


GROUP_KEY = BrandGroup.natural_key
MODEL_KEY = Model.natural_key

# A Brand×Group and, when a model is asked for, its row (or its columns' defaults).
GET_SQL = f"""
    SELECT {reference_fields("$3::text")}
    FROM {BRAND_GROUPS.fullname} AS bg
    LEFT JOIN {MODELS.fullname} AS m
        ON {same_key(GROUP_KEY, columns_of("bg"), "m")} AND m.{MODEL_KEY[-1]} = $3
    WHERE {same_key(GROUP_KEY, parameters(GROUP_KEY), "bg")}
"""
# The same for many keys at once; a row names its key (brand, group_name and model).
GET_MANY_SQL = f"""
    SELECT {reference_fields(f"k.{MODEL_KEY[-1]}")}
    FROM unnest($1::text[], $2::text[], $3::text[]) AS k({", ".join(MODEL_KEY)})
    JOIN {BRAND_GROUPS.fullname} AS bg ON {same_key(GROUP_KEY, columns_of("k"), "bg")}
    LEFT JOIN {MODELS.fullname} AS m ON {same_key(MODEL_KEY, columns_of("k"), "m")}
"""
# Named, so operators can tell the lookup's connections apart in pg_stat_activity (unless
# the engine names its own). The lookups are key equalities: one generic plan serves every
# key, and planning afresh for each call (custom plans) costs more than running the query.
PREPARE_FOR_LOOKUPS_SQL = """
    SELECT set_config('application_name', coalesce(
               nullif(current_setting('application_name'), ''), 'pricing_store lookup'), false),
           set_config('plan_cache_mode', 'force_generic_plan', false)
"""


# A backend blocked on a lock when its client left (close() cut it) goes within a second,
# instead of when the lock is granted: PostgreSQL 14+, on systems that report closed
# sockets, unless the connection already has its own interval.
NOTICE_LEFT_CLIENTS_SQL = """
    SELECT set_config('client_connection_check_interval', '1s', false)
    WHERE current_setting('client_connection_check_interval', true) = '0'
"""


async def prepared_for_lookups(connection: Any, settings: DriverSettings) -> Any:
    """Name the connection and plan it for key lookups; an application_name set stays.

    Not behind PgBouncer, which would carry the settings over to other clients.

    Raises:
        DatabaseUnavailableError: if the connection is lost meanwhile.
    """
    if settings.pgbouncer:
        return connection
    try:
        await connection.execute(PREPARE_FOR_LOOKUPS_SQL)
        with contextlib.suppress(asyncpg.PostgresError):  # older, or unable to
            await connection.execute(NOTICE_LEFT_CLIENTS_SQL)
    except BaseException as error:
        connection.terminate()
        if isinstance(error, Exception):
            raise_translated(error, settings.where())
        raise
    return connection
