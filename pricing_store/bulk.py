"""Bulk upsert: validate and COPY into a private staging table, then one set-based statement.

Memory stays bounded (a batch of records at a time), and the target table is written only
after every item has been validated. The work runs in a savepoint, so a bad item or a failed
statement leaves the caller's transaction usable and the target table untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    DefaultClause,
    Executable,
    and_,
    case,
    column,
    func,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, distinct_on
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from pricing_store.errors import InvalidValueError
from pricing_store.models import BrandGroup, Model
from pricing_store.rows import at_position, item_values
from pricing_store.statements import table_of, upsert_on_conflict

DEFAULT_BATCH_SIZE = 10_000
STAGING = "pricing_store_staging"
OUTCOMES = "pricing_store_outcomes"
POSITION = "position"
UNCHANGED, UPDATED, INSERTED = 0, 1, 2
COUNT_OUTCOMES = f"""
    SELECT count(*) FILTER (WHERE outcome = {INSERTED}) AS inserted,
           count(*) FILTER (WHERE outcome = {UPDATED}) AS updated,
           count(*) FILTER (WHERE outcome = {UNCHANGED}) AS unchanged
    FROM {OUTCOMES}
"""

ModelType = type[BrandGroup] | type[Model]


@dataclass(frozen=True)
class UpsertResult:
    """What a bulk upsert did, counted per distinct key."""

    inserted: int
    updated: int
    unchanged: int


async def bulk_upsert(
    session: AsyncSession,
    model_type: ModelType,
    items: Iterable[object],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> UpsertResult:
    """Insert or update every item; the last of several items with one key wins.

    Raises:
        InvalidValueError: naming the item's position and field, if any item is invalid;
            nothing is written then.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidValueError("batch_size", "must be a positive integer")
    await session.flush()
    async with session.begin_nested():
        connection = await session.connection()
        for statement in scratch_tables_ddl(model_type):
            await connection.execute(text(statement))
        await load(connection, model_type, items, batch_size)
        counts = (await connection.execute(text(COUNT_OUTCOMES))).one()
        await connection.execute(text(f"DROP TABLE {STAGING}, {OUTCOMES}"))
    return UpsertResult(
        inserted=counts.inserted, updated=counts.updated, unchanged=counts.unchanged
    )


async def load(
    connection: AsyncConnection, model_type: ModelType, items: Iterable[object], size: int
) -> None:
    """Validate the items a batch at a time, and write each batch while validating the next.

    Validation runs in a worker thread, so Python checks batch n+1 while PostgreSQL takes
    in batch n: the two sides work at the same time.
    """
    fields = list(model_type.field_rules)
    numbered = enumerate(items)
    driver: Any = (await connection.get_raw_connection()).driver_connection
    merge = merge_statement(model_type)

    def next_batch() -> list[tuple[Any, ...]]:
        return [staging_record(model_type, fields, *item) for item in islice(numbered, size)]

    async def write(records: list[tuple[Any, ...]]) -> None:
        await driver.copy_records_to_table(STAGING, records=records, columns=[POSITION, *fields])
        await connection.execute(merge)
        await connection.execute(text(f"TRUNCATE {STAGING}"))

    records = await asyncio.to_thread(next_batch)
    while records:
        writing = asyncio.ensure_future(write(records))
        try:
            records = await asyncio.to_thread(next_batch)
        finally:
            await writing  # never leave the connection in the middle of a statement


def scratch_tables_ddl(model_type: ModelType) -> list[str]:
    """Temporary tables: the batch being written, and each key's outcome so far.

    JSONB lists travel as `text[]`, which asyncpg encodes natively.
    """
    target = table_of(model_type)
    columns = ", ".join(
        f"CAST(NULL AS text[]) AS {field}" if is_list(target.c[field]) else field
        for field in model_type.field_rules
    )
    key = ", ".join(model_type.natural_key)
    return [
        f"CREATE TEMPORARY TABLE {STAGING} ON COMMIT DROP AS "
        f"SELECT CAST(NULL AS bigint) AS {POSITION}, {columns} "
        f"FROM {target.fullname} WITH NO DATA",
        f"CREATE TEMPORARY TABLE {OUTCOMES} ON COMMIT DROP AS "
        f"SELECT {key}, CAST(NULL AS smallint) AS outcome FROM {target.fullname} WITH NO DATA",
        f"ALTER TABLE {OUTCOMES} ADD PRIMARY KEY ({key})",
    ]


def staging_record(
    model_type: ModelType, fields: list[str], position: int, item: object
) -> tuple[Any, ...]:
    """One COPY record: the item's canonical values, None where it leaves a column out."""
    try:
        values = item_values(model_type, item)
    except InvalidValueError as error:
        raise at_position(position, error) from None
    return (position, *(values.get(field) for field in fields))


def merge_statement(model_type: ModelType) -> Executable:
    """Upsert the staged batch (the last item per key) and note each key's outcome.

    The outcome kept per key is the strongest seen over all batches: a key inserted by one
    batch and changed by a later one still counts as inserted.
    """
    target = table_of(model_type)
    fields = list(model_type.field_rules)
    staging = table(STAGING, column(POSITION), *(column(field) for field in fields))
    key = [staging.c[field] for field in model_type.natural_key]
    source = (
        select(*(staged_value(staging.c[field], target.c[field]) for field in fields))
        .ext(distinct_on(*key))
        .order_by(*key, staging.c[POSITION].desc())
        .cte("source")
    )
    written = (
        upsert_on_conflict(model_type, pg_insert(target).from_select(fields, source.select()))
        # xmax is 0 on a freshly inserted row version and set on an updated one.
        .returning(
            *(target.c[field] for field in model_type.natural_key),
            literal_column("xmax = 0", Boolean).label("inserted"),
        )
        .cte("written")
    )
    outcome = case(
        (written.c.inserted, INSERTED),
        (written.c.inserted.is_not(None), UPDATED),
        else_=UNCHANGED,
    )
    same_key = and_(*(source.c[field] == written.c[field] for field in model_type.natural_key))
    outcomes = table(
        OUTCOMES, *(column(field) for field in model_type.natural_key), column("outcome")
    )
    noted = pg_insert(outcomes).from_select(
        [*model_type.natural_key, "outcome"],
        select(*(source.c[field] for field in model_type.natural_key), outcome).select_from(
            source.outerjoin(written, same_key)
        ),
    )
    noted = noted.on_conflict_do_update(
        index_elements=list(model_type.natural_key),
        set_={"outcome": func.greatest(outcomes.c.outcome, noted.excluded.outcome)},
    )
    return select(func.count()).select_from(noted.returning(outcomes.c.outcome).cte("noted"))


def staged_value(staged: ColumnElement[Any], target: Column[Any]) -> ColumnElement[Any]:
    """Convert a staged value for its target column; take the default where it is missing."""
    value = func.to_jsonb(staged) if is_list(target) else staged
    default = target.server_default
    if isinstance(default, DefaultClause):
        sql = default.arg if isinstance(default.arg, str) else str(default.arg)
        value = func.coalesce(value, literal_column(sql))
    return value.label(target.name)


def is_list(target: Column[Any]) -> bool:
    """Whether the column holds a JSONB list of strings."""
    return isinstance(target.type, JSONB)
