"""Bulk upsert: COPY validated items into a private staging table, then one set-based upsert.

Records stream to the server as they are validated, so memory stays flat; the target table
is written only after every item has passed, by one `UPDATE ... FROM` and one
`INSERT ... SELECT` that do the row work of many single upserts without their
per-statement cost. Where a key comes more than once, the last item's row is picked first.
It all runs in a savepoint: a bad item or a failed statement leaves the caller's
transaction usable and the target table untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Column, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from pricing_store.db import log_statement
from pricing_store.errors import UNIQUE_VIOLATION, InvalidValueError
from pricing_store.repositories.rows import at_position, item_values
from pricing_store.repositories.statements import (
    RowClass,
    columns_of,
    joined,
    json_array,
    on_conflict_update,
    or_default,
    same_key,
    table_of,
    updatable_fields,
)
from pricing_store.validation import MAX_PAGE_SIZE, whole_number

DEFAULT_BATCH_SIZE = 10_000
STAGING = "pricing_store_staging"
SOURCE = "pricing_store_source"
POSITION = "position"


@dataclass(frozen=True)
class UpsertResult:
    """What a bulk upsert did, counted per distinct key."""

    inserted: int
    updated: int
    unchanged: int


async def bulk_upsert(
    session: AsyncSession,
    row_class: RowClass,
    items: Iterable[object],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> UpsertResult:
    """Insert or update every item; the last of several items with one key wins.

    Raises:
        InvalidValueError: naming the item's position and field, if any item is invalid;
            nothing is written then.
    """
    whole_number("batch_size", batch_size, minimum=1, maximum=MAX_PAGE_SIZE)
    await session.flush()
    async with session.begin_nested():
        connection = await session.connection()
        await connection.execute(text(staging_ddl(row_class)))
        driver: Any = (await connection.get_raw_connection()).driver_connection
        records = StagedRecords(row_class, items, batch_size, driver.is_closed)
        log_statement(f"COPY {STAGING} ({', '.join(records.columns)}) FROM STDIN")
        try:
            await driver.copy_records_to_table(STAGING, records=records, columns=records.columns)
        except BaseException as error:
            # The COPY bypassed SQLAlchemy: a connection it lost, or left half-way through a
            # cancelled COPY, must be invalidated here, as SQLAlchemy would have done.
            if driver.is_closed() or not isinstance(error, Exception):
                connection.sync_connection.invalidate(error)  # type: ignore[union-attr]
            raise
        if records.error is not None:
            raise records.error  # the savepoint rolls back what was staged
        repeated = (await connection.execute(text(repeated_keys(row_class)))).scalar()
        statements = merge_statements(row_class, keys_distinct=not repeated)
        if statements.deduplicate is None:
            total = records.count
        else:
            total = (await connection.execute(text(statements.deduplicate))).rowcount
        updated = (await connection.execute(text(statements.update))).rowcount
        try:
            async with session.begin_nested():
                # The savepoint is set as the session hands out its connection.
                insert = await (await session.connection()).execute(text(statements.insert))
                inserted = insert.rowcount
        except IntegrityError as error:
            if getattr(error.orig, "sqlstate", None) != UNIQUE_VIOLATION:
                raise
            # Another transaction committed some of these keys meanwhile: merge with them.
            inserted, raced = (await connection.execute(text(statements.insert_racing))).one()
            updated += raced
        await connection.execute(text(statements.drop))
    return UpsertResult(inserted=inserted, updated=updated, unchanged=total - inserted - updated)


class StagedRecords:
    """The items as COPY records, validated one by one as COPY streams them to the server.

    Streaming lets PostgreSQL take in rows while Python validates the next ones, and keeps
    memory flat whatever the input's size. The first invalid item ends the stream and is
    kept in `error` (raising inside COPY would make the driver cancel the statement).
    Every `batch_size` items the event loop gets a turn, so other tasks are not starved, and
    the stream stops as soon as the connection is found closed: no more input is read.
    """

    def __init__(
        self,
        row_class: RowClass,
        items: Iterable[object],
        batch_size: int,
        connection_closed: Callable[[], bool],
    ) -> None:
        self.row_class = row_class
        self.items = items
        self.batch_size = batch_size
        self.connection_closed = connection_closed
        self.fields = list(row_class.field_rules)
        self.columns = [POSITION, *self.fields]
        target = table_of(row_class)
        self.lists = [field for field in self.fields if is_list(target.c[field])]
        self.error: InvalidValueError | None = None
        self.count = 0

    async def __aiter__(self) -> AsyncIterator[tuple[Any, ...]]:
        row_class, fields, lists = self.row_class, self.fields, self.lists
        batch_size = self.batch_size
        for position, item in enumerate(self.items):
            try:
                values = item_values(row_class, item)
            except InvalidValueError as error:
                self.error = at_position(position, error)
                return
            # JSON text: cheaper for asyncpg to encode than a list as text[].
            for field in lists:
                if field in values:
                    values[field] = json_array(values[field])
            yield (position, *map(values.get, fields))
            self.count = position + 1
            if position % batch_size == batch_size - 1:
                await asyncio.sleep(0)
                if self.connection_closed():
                    return


def staging_ddl(row_class: RowClass) -> str:
    """Create a temporary table of the writable columns, typed as the target's."""
    target = table_of(row_class)
    return (
        f"CREATE TEMPORARY TABLE {STAGING} ON COMMIT DROP AS "
        f"SELECT CAST(NULL AS bigint) AS {POSITION}, {joined(row_class.field_rules)} "
        f"FROM {target.fullname} WITH NO DATA"
    )


@cache
def repeated_keys(row_class: RowClass) -> str:
    """Whether a key was staged more than once: a hash aggregate, cheaper than sorting."""
    key = joined(row_class.natural_key)
    return f"SELECT EXISTS (SELECT FROM {STAGING} GROUP BY {key} HAVING count(*) > 1)"


@dataclass(frozen=True)
class MergeStatements:
    """The set-based upsert of the staged rows, in steps PostgreSQL plans well."""

    deduplicate: str | None
    update: str
    insert: str
    insert_racing: str
    drop: str


@cache
def merge_statements(row_class: RowClass, *, keys_distinct: bool) -> MergeStatements:
    """Upsert the staged rows, the last item per key, counting what happened.

    With a key staged more than once, `deduplicate` first keeps the last item's row per
    key; with every key distinct, the staged rows are the source as they are. Existing
    keys are updated by one join and new keys inserted by another, which costs PostgreSQL
    less than `ON CONFLICT` probing every row. Should another transaction commit one of
    the new keys meanwhile, the insert fails on the unique constraint and `insert_racing`
    runs instead, with `ON CONFLICT`; it returns `xmax = 0`, true for a freshly inserted
    row and false for an updated one.
    """
    target = table_of(row_class)
    fields = list(row_class.field_rules)
    data = updatable_fields(row_class)
    key = joined(row_class.natural_key)
    source_table = STAGING if keys_distinct else SOURCE
    matched = same_key(row_class.natural_key, columns_of("source"), "target")
    value = {field: staged_value(target.c[field]) for field in fields}
    new_keys = (
        f"INSERT INTO {target.fullname} AS target ({joined(fields)}) "
        f"SELECT {joined(value[field] for field in fields)} FROM {source_table} AS source "
        f"WHERE NOT EXISTS (SELECT FROM {target.fullname} AS target WHERE {matched})"
    )
    return MergeStatements(
        # Not analyzed: PostgreSQL sizes a never-analyzed table by its pages, enough to pick
        # index lookups for a small batch and hash joins for a large one.
        deduplicate=None
        if keys_distinct
        else (
            f"CREATE TEMPORARY TABLE {SOURCE} ON COMMIT DROP AS "
            f"SELECT DISTINCT ON ({key}) * "
            f"FROM {STAGING} ORDER BY {key}, {POSITION} DESC"
        ),
        update=(
            f"UPDATE {target.fullname} AS target "
            f"SET {joined(f'{field} = {value[field]}' for field in data)}, updated_at = now() "
            f"FROM {source_table} AS source WHERE {matched} "
            f"AND ({joined(f'target.{field}' for field in data)}) "
            f"IS DISTINCT FROM ({joined(value[field] for field in data)})"
        ),
        insert=new_keys,
        # Every staged row again: the keys committed meanwhile are now visible, and must
        # be merged rather than skipped; rows the update wrote are identical, so untouched.
        insert_racing=f"""
            WITH written AS (
                INSERT INTO {target.fullname} AS target ({joined(fields)})
                SELECT {joined(value[field] for field in fields)}
                FROM {source_table} AS source {on_conflict_update(row_class)}
                RETURNING xmax = 0 AS inserted
            )
            SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)
            FROM written
        """,
        drop=f"DROP TABLE {STAGING}" if keys_distinct else f"DROP TABLE {STAGING}, {SOURCE}",
    )


def staged_value(target: Column[Any]) -> str:
    """The staged value as its column takes it, or the column's default where it is missing."""
    return or_default(f"source.{target.name}", target)


def is_list(target: Column[Any]) -> bool:
    """Whether the column holds a JSONB list of strings."""
    return isinstance(target.type, JSONB)
