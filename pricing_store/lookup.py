"""PricingLookup: the read path of the pricing algorithm, one round trip per item or batch.

It reads with asyncpg directly, on connections of its own opened from the engine's URL
(pass a replica's engine to read from a replica), and can keep a cache that every
committed change, from any client, empties within moments (see `cache`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from types import MappingProxyType, TracebackType
from typing import Any, Self

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pricing_store.cache import ChangeListener, ReferenceCache
from pricing_store.connections import ReadPool
from pricing_store.db import UNREACHABLE, DriverSettings, first_line, settings_of
from pricing_store.errors import DatabaseUnavailableError, InvalidValueError
from pricing_store.models.brand_group import BRAND_GROUP_RULES
from pricing_store.models.model import MODEL_RULES
from pricing_store.reference import REFERENCE_COLUMNS, PriceReference, reference_from_row
from pricing_store.validation import non_negative_int

DEFAULT_POOL_SIZE = 10
SERVER_SETTINGS = {
    # Named, so operators can tell the lookup's connections apart in pg_stat_activity.
    "application_name": "pricing_store lookup",
    # The lookups are key equalities: one generic plan serves every key, and planning
    # afresh for each call (custom plans) costs more than running the query.
    "plan_cache_mode": "force_generic_plan",
}
MISSING = object()
NO_HITS: Mapping[Any, PriceReference | None] = MappingProxyType({})
# How many keys' canonical forms to remember (about 400 bytes each; see `remembered_key`).
REMEMBERED_KEYS = 16_384

# A Brand×Group and, when a model is asked for, its row; m.* is NULL without one.
GET_SQL = f"""
    SELECT {REFERENCE_COLUMNS}
    FROM public.brand_groups AS bg
    LEFT JOIN public.models AS m
        ON m.brand = bg.brand AND m.group_name = bg.group_name AND m.model = $3
    WHERE bg.brand = $1 AND bg.group_name = $2
"""
# The same for many keys at once, each row tagged with its key's position.
GET_MANY_SQL = f"""
    SELECT k.position, {REFERENCE_COLUMNS}
    FROM unnest($1::text[], $2::text[], $3::text[])
        WITH ORDINALITY AS k(brand, group_name, model, position)
    JOIN public.brand_groups AS bg ON bg.brand = k.brand AND bg.group_name = k.group_name
    LEFT JOIN public.models AS m
        ON m.brand = k.brand AND m.group_name = k.group_name AND m.model = k.model
"""

Key = tuple[str, str, str | None]


class PricingLookup:
    """Price references by Brand×Group (and model), optionally cached.

    Use as `async with PricingLookup(engine, cache_size=10_000) as lookup:`; `close()` stops
    what it started. With `cache_size` 0 (the default) nothing is cached.
    """

    def __init__(
        self,
        bind: AsyncEngine | async_sessionmaker[AsyncSession],
        *,
        cache_size: int = 0,
        pool_size: int | None = None,
        listen_to: AsyncEngine | None = None,
    ) -> None:
        """Prepare the lookup; nothing connects before `start` (or `async with`).

        Args:
            bind: The engine to read from (a replica's will do), or a session factory
                bound to one.
            cache_size: How many references to keep in memory; 0 keeps none.
            pool_size: How many connections reads may use at once; the engine's pool size
                by default.
            listen_to: With a cache, the engine to hear changes from, when reads do not
                go to the primary itself: standbys and PgBouncer's transaction mode carry
                no notifications. `bind` by default.

        Raises:
            InvalidValueError: if `cache_size` or `pool_size` is not a valid size.
        """
        engine = bind if isinstance(bind, AsyncEngine) else bind.kw.get("bind")
        if not isinstance(engine, AsyncEngine):
            raise InvalidValueError(
                "bind", "must be an AsyncEngine or a session factory bound to one"
            )
        self._settings = settings_of(engine)
        size = getattr(engine.pool, "size", lambda: DEFAULT_POOL_SIZE)()
        self._pool_size = non_negative_int(
            "pool_size", pool_size if pool_size is not None else size
        )
        if self._pool_size == 0:
            raise InvalidValueError("pool_size", "must be at least 1")
        cache_size = non_negative_int("cache_size", cache_size)
        self._listen_settings = settings_of(listen_to) if listen_to else self._settings
        if cache_size and self._listen_settings.pgbouncer:
            raise InvalidValueError(
                "cache_size",
                "needs LISTEN, which PgBouncer's transaction mode does not carry: "
                "pass listen_to=an engine on the primary itself",
            )
        self._cache = ReferenceCache(cache_size) if cache_size else None
        # Where hits are looked for: the cache's entries (empty whenever it is not in use),
        # or nothing at all.
        self._hits: Mapping[Any, PriceReference | None] = (
            self._cache.entries if self._cache is not None else NO_HITS
        )
        self._pool: ReadPool | None = None
        self._listener: ChangeListener | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Get ready to read; with a cache, return only once changes are being listened to."""
        if self._pool is None:
            self._pool = ReadPool(self._connect, self._pool_size)
        if self._cache is not None and self._listener is None:
            listener = ChangeListener(self._connect_listener, self._cache)
            await listener.start()
            self._listener = listener

    async def close(self) -> None:
        """Stop listening and close every connection this lookup opened."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def get(self, brand: str, group: str, model: str | None = None) -> PriceReference | None:
        """Return the reference for a Brand×Group (and model); None for an unknown Brand×Group.

        One round trip, or none on a cache hit. Keys are trimmed and NFC-normalised.

        Raises:
            InvalidValueError: if a key is not a valid key.
        """
        try:  # keyed as passed: a hit needs no canonicalising
            hit = self._hits.get((brand, group, model), MISSING)
        except TypeError:  # unhashable, so certainly not a valid key
            hit = MISSING
        if hit is not MISSING:
            return hit  # type: ignore[return-value]
        cache = self._cache
        key = canonical_key(brand, group, model)
        generation = cache.generation if cache is not None else 0
        pool = self._pool or await self._started_pool()
        row = await pool.fetchrow(GET_SQL, *key)
        reference = reference_from_row(row, key[2]) if row is not None else None
        if cache is not None:
            cache.put((brand, group, model), reference, generation)
        return reference

    async def get_many(
        self, keys: Iterable[tuple[str, str] | tuple[str, str, str | None]]
    ) -> dict[Any, PriceReference | None]:
        """Return a reference (or None) for every key, in one round trip for all misses.

        Each key is `(brand, group)` or `(brand, group, model_or_None)`; the result is keyed by
        the tuples exactly as passed.

        Raises:
            InvalidValueError: naming the key's position, if a key is not valid.
        """
        hits = self._hits
        found: dict[Any, PriceReference | None] = {}
        misses: list[tuple[Any, Key]] = []  # (key as passed, its canonical form)
        for position, key in enumerate(keys):
            # First, so that a key that is no tuple of strings fails here, hashable or not.
            canonical = canonical_position(position, key)
            hit = hits.get(padded(key), MISSING)
            if hit is not MISSING:
                found[key] = hit  # type: ignore[assignment]
                continue
            misses.append((key, canonical))
        if misses:
            await self._fetch_many(misses, found)
        return found

    async def _fetch_many(self, misses: list[tuple[Any, Key]], found: dict[Any, Any]) -> None:
        cache = self._cache
        generation = cache.generation if cache is not None else 0
        distinct = list(dict.fromkeys(canonical for _, canonical in misses))
        brands, groups, models = zip(*distinct, strict=True)
        pool = self._pool or await self._started_pool()
        rows = await pool.fetch(GET_MANY_SQL, brands, groups, models)
        by_key: dict[Key, PriceReference] = {}
        for row in rows:
            key = distinct[row[0] - 1]
            by_key[key] = reference_from_row(row, key[2])
        for original, canonical in misses:
            reference = found[original] = by_key.get(canonical)
            if cache is not None:
                cache.put(padded(original), reference, generation)

    async def _started_pool(self) -> ReadPool:
        await self.start()
        assert self._pool is not None
        return self._pool

    async def _connect(self) -> Any:
        return await connect(self._settings)

    async def _connect_listener(self) -> Any:
        return await connect(self._listen_settings)


async def connect(settings: DriverSettings) -> Any:
    """A connection for the lookup, named and planned for key lookups.

    Raises:
        DatabaseUnavailableError: if the server cannot be reached.
    """
    server_settings = dict(SERVER_SETTINGS)
    if settings.pgbouncer:
        # PgBouncer refuses startup parameters it does not know.
        del server_settings["plan_cache_mode"]
    try:
        return await asyncpg.connect(
            settings.dsn(), server_settings=server_settings, **settings.connect_args
        )
    except UNREACHABLE as error:
        raise DatabaseUnavailableError(settings.where(), first_line(error)) from error


def padded(key: Sequence[Any]) -> tuple[Any, ...]:
    """A two-part key with its model (None) made explicit, so both spellings share entries."""
    return (key[0], key[1], None) if len(key) == 2 else tuple(key)


def canonical_key(brand: object, group: object, model: object) -> Key:
    """Trim and NFC-normalise a key as every write does.

    Raises:
        InvalidValueError: if a part is not a valid key.
    """
    try:
        return remembered_key(brand, group, model)
    except TypeError:  # an unhashable part, so not a string: let the rules say so
        return canonicalised(brand, group, model)


def canonicalised(brand: object, group: object, model: object) -> Key:
    """The canonical key, worked out afresh."""
    return (
        BRAND_GROUP_RULES["brand"]("brand", brand),
        BRAND_GROUP_RULES["group_name"]("group_name", group),
        None if model is None else MODEL_RULES["model"]("model", model),
    )


# Canonicalising costs more than a cache hit, and the pricing algorithm asks for the same
# few thousand keys again and again: their canonical forms are remembered (invalid keys,
# which raise, are not).
remembered_key = lru_cache(maxsize=REMEMBERED_KEYS, typed=True)(canonicalised)


def canonical_position(position: int, key: object) -> Key:
    """The canonical form of `keys[position]`.

    Raises:
        InvalidValueError: naming the position, if the key is not valid.
    """
    if not isinstance(key, tuple) or len(key) not in (2, 3):
        raise InvalidValueError(f"keys[{position}]", "must be a (brand, group[, model]) tuple")
    try:
        return canonical_key(*padded(key))
    except InvalidValueError as error:
        raise InvalidValueError(f"keys[{position}].{error.field}", error.rule) from None
