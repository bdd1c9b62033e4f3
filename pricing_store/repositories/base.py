"""A small generic repository: write, find, page and count rows of one model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import func, inspect, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from pricing_store.errors import InvalidValueError, host_and_database, translated
from pricing_store.models.base import KeyedModel
from pricing_store.repositories.bulk import DEFAULT_BATCH_SIZE, UpsertResult, bulk_upsert
from pricing_store.repositories.driver import fetch_row
from pricing_store.repositories.loading import as_loaded
from pricing_store.repositories.paging import Page, decode_cursor, encode_cursor
from pricing_store.repositories.rows import Item, item_values
from pricing_store.repositories.statements import (
    RowStatement,
    find_by_key,
    insert_or_select,
    newest_first,
    table_of,
    upsert_returning_row,
)
from pricing_store.validation import MAX_PAGE_SIZE, whole_number

RowT = TypeVar("RowT", bound=KeyedModel)


class Repository(Generic[RowT]):
    """Data access for one model inside the caller's session: flushes, never commits."""

    row_class: ClassVar[type[KeyedModel]]

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def location(self) -> str:
        """Host and database of the session's server, for error messages."""
        bind: Any = self.session.bind
        url = getattr(bind, "url", None) or getattr(getattr(bind, "engine", None), "url", None)
        return host_and_database(url) if url is not None else "the database"

    @translated
    async def create(self, item: RowT) -> RowT:
        """Insert `item` and return it with its id and server-set columns loaded.

        The insert runs in a savepoint, so a failure leaves the caller's transaction usable
        and the work it already did in place.

        Raises:
            InvalidValueError: if `item` is not of this repository's model or a required
                column was never set.
            DuplicateKeyError: if a row with the same key exists.
        """
        if not isinstance(item, self.row_class):
            raise InvalidValueError(
                "item", f"must be a {self.row_class.__name__}, not {type(item).__name__}"
            )
        item_values(self.row_class, item)
        async with self.session.begin_nested():
            self.session.add(item)
        return item

    @translated
    async def upsert(self, item: Item) -> RowT:
        """Insert the row, or overwrite every data column of the row with the same key.

        One statement, one round trip. `created_at` is kept; `updated_at` moves only when a
        value really changed, so sending the same data again writes nothing. Columns `item`
        leaves out are set to their defaults. Returns the row as the database now holds it
        (refreshing the session's copy if it had one); a model object passed in is only
        read, not added to the session.

        Raises:
            InvalidValueError: if a value is invalid or a required column is missing.
        """
        row, values = await self._write_one(upsert_returning_row, item)
        if row is None:
            # Only when another transaction committed identical data for this key after the
            # statement began; a new statement sees that row.
            return await self._find_existing(values)
        loaded: RowT = as_loaded(self.session, self.row_class, row)
        return loaded

    @translated
    async def get_or_create(self, item: Item) -> tuple[RowT, bool]:
        """Return the row with `item`'s key untouched, or insert `item`; and whether it did.

        Safe under concurrency: of many callers racing on a missing key, one inserts and
        every other gets that same row, none an error.

        Raises:
            InvalidValueError: if a value is invalid or a required column is missing.
        """
        row, values = await self._write_one(insert_or_select, item)
        if row is None:
            # The key was inserted by a transaction that committed after this one began.
            return await self._find_existing(values), False
        return as_loaded(self.session, self.row_class, row[:-1]), bool(row[-1])

    @translated
    async def bulk_upsert(
        self, items: Iterable[Item], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> UpsertResult:
        """Upsert many items (model objects or mappings) all or nothing; see `upsert`.

        Every item is validated before the table is written; with several items for one key
        (after canonicalisation) the last wins. Counts are per distinct key. Objects already
        loaded in the session are not refreshed.

        Raises:
            InvalidValueError: naming the item's position and field (`items[7].base_price`);
                nothing is written and the caller's transaction stays usable.
        """
        return await bulk_upsert(self.session, self.row_class, items, batch_size=batch_size)

    @translated
    async def get_all(self, limit: int = 100, *, offset: int = 0) -> list[RowT]:
        """Return a page of rows, newest first; the order ends in `id` so pages never overlap.

        Raises:
            InvalidValueError: if `limit` is not an integer from 0 to 100,000, or `offset`
                not a non-negative one.
        """
        statement = (
            select(self.row_class)
            .order_by(*newest_first(self.row_class))
            .limit(whole_number("limit", limit, maximum=MAX_PAGE_SIZE))
            .offset(whole_number("offset", offset))
        )
        return list(await self.session.scalars(statement))

    @translated
    async def get_page(self, limit: int = 100, *, after: str | None = None) -> Page[RowT]:
        """Return up to `limit` rows, newest first, after the row the cursor `after` names.

        Pass each page's `next_cursor` as the next call's `after`; it is None after the last
        page. Unlike `get_all`'s offsets, a deep page costs what the first one does, and
        rows inserted meanwhile are neither skipped nor repeated.

        Raises:
            InvalidValueError: if `limit` is not an integer from 1 to 100,000 or `after` is
                not a cursor from `get_page`.
        """
        whole_number("limit", limit, minimum=1, maximum=MAX_PAGE_SIZE)
        model = self.row_class
        columns = table_of(model).c
        statement = select(model).order_by(*newest_first(model))
        if after is not None:
            statement = statement.where(
                tuple_(columns.created_at, columns.id) < tuple_(*decode_cursor(after))
            )
        rows: list[RowT] = list(await self.session.scalars(statement.limit(limit + 1)))
        if len(rows) <= limit:
            return Page(rows, None)
        last: dict[str, Any] = inspect(rows[limit - 1]).dict  # its loaded values
        return Page(rows[:limit], encode_cursor(last["created_at"], last["id"]))

    async def iter_all(self, *, batch_size: int = 1_000) -> AsyncIterator[RowT]:
        """Yield every row, newest first, reading `batch_size` rows per query (keyset pages).

        Raises:
            InvalidValueError: if `batch_size` is not an integer from 1 to 100,000.
        """
        page = await self.get_page(batch_size)
        while True:
            for row in page.items:
                yield row
            if page.next_cursor is None:
                return
            page = await self.get_page(batch_size, after=page.next_cursor)

    @translated
    async def count(self) -> int:
        """Count every row of the table."""
        total = await self.session.scalar(select(func.count()).select_from(self.row_class))
        return int(total or 0)

    async def _write_one(
        self, build: Callable[[Any, frozenset[str]], RowStatement], item: Item
    ) -> tuple[Sequence[Any] | None, dict[str, Any]]:
        """Validate `item`, run the one-row statement `build` makes for it; row and values."""
        values = item_values(self.row_class, item)
        statement = build(self.row_class, frozenset(values))
        return await fetch_row(self.session, statement.sql, statement.arguments(values)), values

    def _canonical(self, key: Mapping[str, object]) -> dict[str, str]:
        """Trim and NFC-normalise the parts of a natural key.

        Raises:
            InvalidValueError: if a part of the key is not a valid key.
        """
        rules = self.row_class.field_rules
        return {field: rules[field](field, value) for field, value in key.items()}

    async def _find_by_key(self, **key: object) -> RowT | None:
        """Find the row with this natural key, canonicalising it first.

        Raises:
            InvalidValueError: if a part of the key is not a valid key.
        """
        return await self._find(self._canonical(key))

    @translated
    async def _find(self, values: Mapping[str, Any]) -> RowT | None:
        """Find the row with the natural key of these canonical values."""
        key = {field: values[field] for field in self.row_class.natural_key}
        row: RowT | None = await self.session.scalar(find_by_key(self.row_class), key)
        return row

    async def _find_existing(self, values: Mapping[str, Any]) -> RowT:
        row = await self._find(values)
        if row is None:
            raise LookupError("the row vanished while it was being written")
        return row
