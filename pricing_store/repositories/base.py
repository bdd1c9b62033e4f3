"""A small generic repository: write, find, page and count rows of one model."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeAlias, TypeVar

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

ModelT = TypeVar("ModelT", bound=KeyedModel)
Generate: TypeAlias = Callable[[], Awaitable[Any]]


class Repository(Generic[ModelT]):
    """Data access for one model inside the caller's session: flushes, never commits."""

    model_type: ClassVar[type[KeyedModel]]

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def location(self) -> str:
        """Host and database of the session's server, for error messages."""
        bind: Any = self.session.bind
        url = getattr(bind, "url", None) or getattr(getattr(bind, "engine", None), "url", None)
        return host_and_database(url) if url is not None else "the database"

    @translated
    async def create(self, item: ModelT) -> ModelT:
        """Insert `item` and return it with its id and server-set columns loaded.

        The insert runs in a savepoint, so a failure leaves the caller's transaction usable
        and the work it already did in place.

        Raises:
            InvalidValueError: if `item` is not of this repository's model or a required
                column was never set.
            DuplicateKeyError: if a row with the same key exists.
        """
        if not isinstance(item, self.model_type):
            raise InvalidValueError(
                "item", f"must be a {self.model_type.__name__}, not {type(item).__name__}"
            )
        item_values(self.model_type, item)
        async with self.session.begin_nested():
            self.session.add(item)
        return item

    @translated
    async def upsert(self, item: Item) -> ModelT:
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
        loaded: ModelT = as_loaded(self.session, self.model_type, row)
        return loaded

    @translated
    async def get_or_create(self, item: Item) -> tuple[ModelT, bool]:
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
        return as_loaded(self.session, self.model_type, row[:-1]), bool(row[-1])

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
        return await bulk_upsert(self.session, self.model_type, items, batch_size=batch_size)

    @translated
    async def get_all(self, limit: int = 100, *, offset: int = 0) -> list[ModelT]:
        """Return a page of rows, newest first; the order ends in `id` so pages never overlap.

        Raises:
            InvalidValueError: if `limit` is not an integer from 0 to 100,000, or `offset`
                not a non-negative one.
        """
        statement = (
            select(self.model_type)
            .order_by(*newest_first(self.model_type))
            .limit(whole_number("limit", limit, maximum=MAX_PAGE_SIZE))
            .offset(whole_number("offset", offset))
        )
        return list(await self.session.scalars(statement))

    @translated
    async def get_page(self, limit: int = 100, *, after: str | None = None) -> Page[ModelT]:
        """Return up to `limit` rows, newest first, after the row the cursor `after` names.

        Pass each page's `next_cursor` as the next call's `after`; it is None after the last
        page. Unlike `get_all`'s offsets, a deep page costs what the first one does, and
        rows inserted meanwhile are neither skipped nor repeated.

        Raises:
            InvalidValueError: if `limit` is not an integer from 1 to 100,000 or `after` is
                not a cursor from `get_page`.
        """
        whole_number("limit", limit, minimum=1, maximum=MAX_PAGE_SIZE)
        model = self.model_type
        columns = table_of(model).c
        statement = select(model).order_by(*newest_first(model))
        if after is not None:
            statement = statement.where(
                tuple_(columns.created_at, columns.id) < tuple_(*decode_cursor(after))
            )
        rows: list[ModelT] = list(await self.session.scalars(statement.limit(limit + 1)))
        if len(rows) <= limit:
            return Page(rows, None)
        last: dict[str, Any] = inspect(rows[limit - 1]).dict  # its loaded values
        return Page(rows[:limit], encode_cursor(last["created_at"], last["id"]))

    async def iter_all(self, *, batch_size: int = 1_000) -> AsyncIterator[ModelT]:
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
        total = await self.session.scalar(select(func.count()).select_from(self.model_type))
        return int(total or 0)

    async def _write_one(
        self, build: Callable[[Any, frozenset[str]], RowStatement], item: Item
    ) -> tuple[Sequence[Any] | None, dict[str, Any]]:
        """Validate `item`, run the one-row statement `build` makes for it; row and values."""
        values = item_values(self.model_type, item)
        statement = build(self.model_type, frozenset(values))
        return await fetch_row(self.session, statement.sql, statement.arguments(values)), values

    def _canonical(self, key: Mapping[str, object]) -> dict[str, str]:
        """Trim and NFC-normalise the parts of a natural key.

        Raises:
            InvalidValueError: if a part of the key is not a valid key.
        """
        rules = self.model_type.field_rules
        return {field: rules[field](field, value) for field, value in key.items()}

    async def _find_by_key(self, **key: object) -> ModelT | None:
        """Find the row with this natural key, canonicalising it first.

        Raises:
            InvalidValueError: if a part of the key is not a valid key.
        """
        return await self._find(self._canonical(key))

    @translated
    async def _find(self, values: Mapping[str, Any]) -> ModelT | None:
        """Find the row with the natural key of these canonical values."""
        key = {field: values[field] for field in self.model_type.natural_key}
        row: ModelT | None = await self.session.scalar(find_by_key(self.model_type), key)
        return row

    async def _find_existing(self, values: Mapping[str, Any]) -> ModelT:
        row = await self._find(values)
        if row is None:
            raise LookupError("the row vanished while it was being written")
        return row

    async def _get_or_generate(
        self, key: Mapping[str, object], generate: Generate
    ) -> tuple[ModelT, bool]:
        """Return the row for `key`, or store what `generate()` makes for it (run once per key).

        Callers for one key, in any process, queue on a transaction-scoped advisory lock, so
        the second finds what the first stored instead of generating again. Its own steps
        translate database errors; what `generate()` raises reaches the caller untouched.
        """
        canonical = self._canonical(key)
        found = await self._find(canonical)
        if found is not None:
            return found, False
        await self._lock(canonical)
        found = await self._find(canonical)
        if found is not None:
            return found, False
        generated = await generate()
        return await self.get_or_create(item_values(self.model_type, generated, key=canonical))

    @translated
    async def _lock(self, key: Mapping[str, str]) -> None:
        """Wait for the key's transaction-scoped advisory lock."""
        await self.session.execute(select(func.pg_advisory_xact_lock(self._lock_id(key))))

    def _lock_id(self, key: Mapping[str, str]) -> int:
        """Derive a signed 64-bit advisory lock number from the table and key."""
        text = "\x00".join([table_of(self.model_type).name, *key.values()])
        digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)
