"""The lookup's SQL, written from the tables' metadata: a new column needs no edit here.

A reference is every writable column of the Brand×Group's row and, for a model, every
writable column of the model's row outside the key, each selected under its own name
(JSONB as its JSON text, which the lookup parses once per distinct text).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Column, Table
from sqlalchemy.dialects.postgresql import JSONB

from pricing_store.models import BrandGroup, Model
from pricing_store.repositories.statements import columns_of, parameters, same_key, table_of

BRAND_GROUPS: Table = table_of(BrandGroup)
MODELS: Table = table_of(Model)
# The columns each table gives a reference, by name.
GROUP_FIELDS = tuple(BrandGroup.field_rules)
MODEL_FIELDS = tuple(name for name in Model.field_rules if name not in Model.natural_key)
LIST_FIELDS = frozenset(
    name
    for table, names in ((BRAND_GROUPS, GROUP_FIELDS), (MODELS, MODEL_FIELDS))
    for name in names
    if isinstance(table.c[name].type, JSONB)
)


def selected(alias: str, column: Column[Any]) -> str:
    """`bg.base_price`, or `bg.expected_origins::text AS expected_origins` for JSONB."""
    if isinstance(column.type, JSONB):
        return f"{alias}.{column.name}::text AS {column.name}"
    return f"{alias}.{column.name}"


def absent_model_value(column: Column[Any]) -> Any:
    """What a reference holds for a model column when the model has no row: its default.

    A coefficient's default, 1.0, is the neutral one; a list's is empty.
    """
    if isinstance(column.type, JSONB):
        return ()
    default = getattr(column.server_default, "arg", None)
    scale = getattr(column.type, "scale", None)
    if default is None or scale is None:
        return None
    return Decimal(str(default)).quantize(Decimal(1).scaleb(-scale))


SELECTED = ", ".join(
    [
        *(selected("bg", BRAND_GROUPS.c[name]) for name in GROUP_FIELDS),
        *(selected("m", MODELS.c[name]) for name in MODEL_FIELDS),
        "m.id IS NOT NULL AS model_found",
    ]
)
ABSENT_MODEL = {name: absent_model_value(MODELS.c[name]) for name in MODEL_FIELDS}
GROUP_KEY = BrandGroup.natural_key
MODEL_KEY = Model.natural_key

# A Brand×Group and, when a model is asked for, its row; m.* is NULL without one.
GET_SQL = f"""
    SELECT {SELECTED}
    FROM {BRAND_GROUPS.fullname} AS bg
    LEFT JOIN {MODELS.fullname} AS m
        ON {same_key(GROUP_KEY, columns_of("bg"), "m")} AND m.{MODEL_KEY[-1]} = $3
    WHERE {same_key(GROUP_KEY, parameters(GROUP_KEY), "bg")}
"""
# With listen_to, the same with the position the server has replayed to (NULL unless it is
# a standby now: a primary that went through recovery or promotion keeps its last replay
# position, frozen), in a row even for no match.
REPLAYED = "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() END"
GET_ON_STANDBY_SQL = f"""
    SELECT replay.replayed, found.*
    FROM (SELECT {REPLAYED} AS replayed) AS replay
    LEFT JOIN LATERAL ({GET_SQL}) AS found ON true
"""
# The same for many keys at once, each row tagged with its key's position.
GET_MANY_SQL = f"""
    SELECT k.position, {SELECTED}
    FROM unnest($1::text[], $2::text[], $3::text[])
        WITH ORDINALITY AS k({", ".join(MODEL_KEY)}, position)
    JOIN {BRAND_GROUPS.fullname} AS bg ON {same_key(GROUP_KEY, columns_of("k"), "bg")}
    LEFT JOIN {MODELS.fullname} AS m ON {same_key(MODEL_KEY, columns_of("k"), "m")}
"""
GET_MANY_ON_STANDBY_SQL = f"""
    SELECT replay.replayed, found.*
    FROM (SELECT {REPLAYED} AS replayed) AS replay
    LEFT JOIN LATERAL ({GET_MANY_SQL}) AS found ON true
"""
