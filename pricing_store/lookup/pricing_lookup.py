"""PricingLookup: the read path of the pricing algorithm, one round trip per item or batch.

It reads with asyncpg directly, on connections of its own opened from the engine's URL
(pass a replica's engine to read from a replica: now and then a second round trip asks how
far it has replayed, see `replay`), and can keep a cache from which every
committed change, from any client, evicts what it changed as it is heard (see `cache` for
the rules, `listener` for the task that hears). `get_or_generate` stores what a generator
makes for a missing key (see `generation`).

Its life has states (`State`): new, starting (concurrent first calls share one start),
open, closing and closed. `close()` is final and bounded in time whatever the network does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from functools import partial
from types import MappingProxyType, TracebackType
from typing import Any, Self

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pricing_store.db import driver_connector, require_read_write, settings_of
from pricing_store.errors import InvalidValueError, LookupClosedError, PricingStoreError
from pricing_store.lookup.cache import Change, ReferenceCache, Token
from pricing_store.lookup.connections import CLOSE_GRACE, DEFAULT_TIMEOUT, DriverPool
from pricing_store.lookup.generation import Generations
from pricing_store.lookup.generator import (
    BRAND_GROUP,
    MODEL,
    Kind,
    PriceGenerator,
    checked_generator,
)
from pricing_store.lookup.keys import CanonicalKeys, Key, listed_keys
from pricing_store.lookup.leases import DEFAULT_LEASE_SECONDS
from pricing_store.lookup.lifecycle import CallsUnderWay, State, result_of
from pricing_store.lookup.listener import DEFAULT_LISTEN_TIMEOUT, ChangeListener
from pricing_store.lookup.prerequisites import require_schema
from pricing_store.lookup.queries import GET_MANY_SQL, GET_SQL, prepared_for_lookups
from pricing_store.lookup.reference import (
    PriceReference,
    key_of,
    list_parser,
    reference_from_row,
)
from pricing_store.lookup.replay import (
    GET_MANY_ON_STANDBY_SQL,
    GET_ON_STANDBY_SQL,
    ReplayPositions,
)
from pricing_store.lookup.stats import LookupStats
from pricing_store.lookup.telemetry import telemetry
from pricing_store.validation import positive_seconds, whole_number

DEFAULT_POOL_SIZE = 10
DEFAULT_GENERATION_TIMEOUT = 120.0
DEFAULT_MAX_GENERATIONS = 100
DEFAULT_CLOSE_TIMEOUT = 5.0
# Connections for generation's short statements on the primary, when reads go elsewhere.
GENERATION_POOL_SIZE = 3
# Connections for claiming, renewing and releasing leases, and nothing else.
LEASE_POOL_SIZE = 2
MISSING = object()
NO_HITS: Mapping[Any, PriceReference | None] = MappingProxyType({})


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
        pool_timeout: float = DEFAULT_TIMEOUT,
        listen_to: AsyncEngine | None = None,
        listen_timeout: float = DEFAULT_LISTEN_TIMEOUT,
        generator: PriceGenerator | None = None,
        generation_timeout: float = DEFAULT_GENERATION_TIMEOUT,
        max_generations: int = DEFAULT_MAX_GENERATIONS,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        """Prepare the lookup; nothing connects before `start` (or `async with`, or a call).

        Args:
            bind: The engine to read from (a replica's will do), or a session factory
                bound to one.
            cache_size: How many references to keep in memory; 0 keeps none.
            pool_size: How many connections reads may use at once; the engine's pool size
                by default.
            pool_timeout: Seconds a read waits for a free connection when all are busy,
                then raises DatabaseTimeoutError (at most an hour).
            listen_to: With a cache, the engine to hear changes from, when reads do not
                go to the primary itself: standbys and PgBouncer's transaction mode carry
                no notifications. `bind` by default. Generated rows are written there too.
            listen_timeout: Seconds within which a listening connection that went silent
                (a half-open TCP connection, say) is given up; the cache is bypassed until
                a new one listens (0.1 s to an hour).
            generator: What `get_or_generate` asks for missing rows (see `PriceGenerator`).
            generation_timeout: Seconds one generator call may take (at most an hour).
            max_generations: How many generator calls this lookup runs at once (an LLM
                quota); more wait their turn, holding no connection.
            lease_seconds: Seconds a generation's lease outlives its holder's last renewal
                (0.5 s to 10 minutes): how long a dead or frozen holder blocks its key, and
                how long a holder retries storing its row through an outage.
            close_timeout: Seconds `close()` waits for calls under way before cutting
                them short (at most an hour); it returns within a second more.

        Raises:
            InvalidValueError: if a size, a timeout or the generator is not valid.
        """
        engine = bind if isinstance(bind, AsyncEngine) else bind.kw.get("bind")
        if not isinstance(engine, AsyncEngine):
            raise InvalidValueError(
                "bind", "must be an AsyncEngine or a session factory bound to one"
            )
        self._settings = settings_of(engine)
        self._open_read = driver_connector(engine)
        size = getattr(engine.pool, "size", lambda: DEFAULT_POOL_SIZE)()
        self._pool_size = whole_number(
            "pool_size", pool_size if pool_size is not None else size, minimum=1, maximum=1_000
        )
        self._pool_timeout = positive_seconds("pool_timeout", pool_timeout)
        cache_size = whole_number("cache_size", cache_size, maximum=100_000_000)
        self._listen_settings = settings_of(listen_to) if listen_to else self._settings
        if cache_size or generator is not None:
            require_read_write(self._listen_settings)
        self._open_primary = driver_connector(listen_to) if listen_to else self._open_read
        if cache_size and self._listen_settings.pgbouncer:
            raise InvalidValueError(
                "cache_size",
                "needs LISTEN, which PgBouncer's transaction mode does not carry: "
                "pass listen_to=an engine on the primary itself",
            )
        listen_timeout = positive_seconds("listen_timeout", listen_timeout, least=0.1)
        self._close_timeout = positive_seconds("close_timeout", close_timeout)
        generation_timeout = positive_seconds("generation_timeout", generation_timeout)
        max_generations = whole_number("max_generations", max_generations, minimum=1, maximum=10**5)
        lease_seconds = positive_seconds("lease_seconds", lease_seconds, least=0.5, most=600)
        # With listen_to, reads may go to a standby (a value is cached only once it has
        # replayed enough), and writes go to listen_to's server, the primary.
        self._tracks_replay = listen_to is not None
        self._positions = ReplayPositions()
        self._cache = (
            ReferenceCache(cache_size, key_of, tracks_positions=self._tracks_replay)
            if cache_size
            else None
        )
        # Where hits are looked for: the cache's entries (empty whenever it is not in use),
        # or nothing at all.
        self._hits: Mapping[Any, PriceReference | None] = (
            self._cache.entries if self._cache is not None else NO_HITS
        )
        # Its `get`, bound once: an OrderedDict's methods are not among those CPython looks
        # up fastest.
        self._find_hit = self._hits.get
        # Where a hit is noted (see ReferenceCache.notes); never used without a cache.
        self._notes: list[Any] = self._cache.notes if self._cache is not None else []
        self._miss_count = 0
        # Nothing connects before a read needs it; the pools only open connections then.
        self._pool = self._driver_pool(self._pool_size, primary=False)
        self._primary = (
            self._driver_pool(GENERATION_POOL_SIZE) if self._tracks_replay else self._pool
        )
        self._listener = (
            ChangeListener(
                self._connect_primary,
                self._cache,
                self._on_change,
                listen_timeout=listen_timeout,
                where=self._listen_settings.where(),
            )
            if self._cache is not None
            else None
        )
        self._generations = (
            Generations(
                checked_generator(generator),
                self._primary,
                lease_pool=self._driver_pool(LEASE_POOL_SIZE),
                timeout=generation_timeout,
                limit=max_generations,
                lease_seconds=lease_seconds,
            )
            if generator is not None
            else None
        )
        # Per lookup, so that close() lets go of what they hold.
        self._canonical = CanonicalKeys()
        self._parse_list = list_parser()
        self.state = State.NEW
        self._under_way = CallsUnderWay()
        self._starting: asyncio.Task[None] | None = None
        self._listening: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._telemetry = telemetry()  # None without OpenTelemetry

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
        """Get ready to read; with a cache, return only once changes are being listened to.

        Concurrent callers share one start; a start that failed is tried again by the next
        call.

        Raises:
            LookupClosedError: if the lookup was closed.
            SchemaNotMigratedError: with a cache or a generator, if the database lacks the
                change triggers or the lease table they need (naming what is missing).
            DatabaseUnavailableError: if the server cannot be reached.
        """
        if self.state is State.OPEN:
            return
        if self.state in (State.CLOSING, State.CLOSED):
            raise LookupClosedError()
        if self._starting is None:
            self.state = State.STARTING
            self._starting = asyncio.get_running_loop().create_task(self._open())
        await result_of(self._starting)

    async def _open(self) -> None:
        try:
            if self._cache is not None or self._generations is not None:
                check = self._driver_pool(1)  # closed at once: a start that fails holds nothing
                try:
                    await require_schema(
                        check,
                        triggers=self._cache is not None,
                        leases=self._generations is not None,
                    )
                finally:
                    await check.close()
            if self._listener is not None:
                started = asyncio.get_running_loop().create_future()
                self._listening = asyncio.get_running_loop().create_task(
                    self._listener.run(started)
                )
                await started
        except BaseException:
            if self.state is State.STARTING:  # not closing: the next call starts afresh
                self.state, self._starting, self._listening = State.NEW, None, None
            raise
        self.state = State.OPEN
        if self._telemetry is not None:
            self._telemetry.register(self, caching=self._cache is not None)

    async def close(self) -> None:
        """Stop listening and close every connection this lookup opened; final.

        Calls under way get `close_timeout` seconds to finish, then are cut short (they
        raise LookupClosedError); later calls raise LookupClosedError. Returns within
        `close_timeout` plus a second; a second `close()` waits for the first.
        """
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close())
        await asyncio.shield(self._closing)  # the caller's cancellation reaches the caller

    async def _close(self) -> None:
        self.state = State.CLOSING
        try:
            await self._close_all()
        finally:
            self.state = State.CLOSED
            if self._telemetry is not None:
                self._telemetry.retire(self)

    async def _close_all(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._close_timeout
        background = [task for task in (self._starting, self._listening) if task is not None]
        for task in background:
            task.cancel()  # the listener closes its connection in its `finally`
        if self._cache is not None:
            self._cache.lost(cause=None)  # bypassed from now on
        generations = self._generations
        if generations is not None:
            generations.closing = True  # an LLM call begun now would only be cut
        with contextlib.suppress(TimeoutError):  # calls under way get close_timeout
            async with asyncio.timeout_at(deadline):
                await self._under_way.none.wait()
        if generations is not None:
            background += await generations.finish(max(0.0, deadline - loop.time()))
        # Everything left is cut at once, side by side: a second more at most.
        remaining = max(0.0, deadline - loop.time())
        pools = {id(pool): pool for pool in (self._pool, self._primary)}.values()
        await asyncio.gather(
            *(pool.close(remaining) for pool in pools),
            *([generations.close()] if generations is not None else []),
            *([asyncio.wait(background, timeout=remaining + CLOSE_GRACE)] if background else []),
        )
        self._canonical.clear()
        self._parse_list.cache_clear()

    async def get(self, brand: str, group: str, model: str | None = None) -> PriceReference | None:
        """Return the reference for a Brand×Group (and model); None for an unknown Brand×Group.

        One round trip, or none on a cache hit (reading a standby, sometimes a second: see
        `replay`). Keys are trimmed and NFC-normalised.

        Raises:
            InvalidValueError: if a key is not a valid key.
            DatabaseUnavailableError: if the server cannot be reached.
            SchemaNotMigratedError: if the tables are missing.
            LookupClosedError: if the lookup was closed.
        """
        # Hits are most of a cached lookup's calls: their path comes first, in the fewest
        # and cheapest steps CPython has (its bytecode specialises a local's call, not a
        # call on an instance attribute, and runs a list's append inline).
        find_hit = self._find_hit
        try:
            hit = find_hit((brand, group, model))
        except TypeError:  # unhashable, so certainly not a valid key
            hit = None
        if hit is None:  # a miss, or a key cached as unknown
            return await self._get_otherwise(brand, group, model)
        self._notes.append(hit)  # a reference names its key: nothing made for this hit is kept
        return hit

    async def _get_otherwise(
        self, brand: str, group: str, model: str | None
    ) -> PriceReference | None:
        """`get` past a hit in the spelling asked: a key cached as unknown, or a read."""
        spelled = (brand, group, model)
        try:
            cached_as_unknown = spelled in self._hits  # `get` found None there, if anything
        except TypeError:  # unhashable: the canonical form says which part is wrong
            cached_as_unknown = False
        if cached_as_unknown:
            self._notes.append(spelled)
            return None
        key = self._canonical(brand, group, model)
        if key != spelled and (hit := self._hits.get(key, MISSING)) is not MISSING:
            self._notes.append(hit or key)
            return hit  # type: ignore[return-value]
        self._miss_count += 1
        if self.state is not State.OPEN:
            await self.start()
        pool, cache = self._pool, self._cache
        token = cache.token(key) if cache is not None else None
        replayed = None
        with self._under_way:
            # Perhaps a standby. A read begun while the cache is not in use is never stored
            # (coming back changes every token), so it needs no position.
            if cache is not None and cache.active and self._tracks_replay:
                on_standby = self._positions.reader(partial(cache.replayed_enough, key))
                replayed, rows = await pool.run(on_standby, GET_ON_STANDBY_SQL, *key)
                row = rows[0] if rows else None
            else:
                row = await pool.fetchrow(GET_SQL, *key)
        reference = reference_from_row(row, self._parse_list) if row is not None else None
        if cache is not None and token is not None:  # both or neither
            cache.put(key, key, reference, token, replayed)
        return reference

    async def get_or_generate(
        self, brand: str, group: str, model: str | None = None
    ) -> PriceReference:
        """Like `get`, generating (and storing) the Brand×Group and the model when missing.

        Only what is missing is generated, once per key however many tasks ask at once,
        and once across processes while each lease holder renews its lease in time (see
        `lease_seconds`); the row is stored once in any case. The others wait for the
        stored row. No connection is held and no transaction is open while the generator
        runs. A row stored meanwhile by anyone else wins over the generated one.

        Raises:
            InvalidValueError: if a key is not valid, no generator was given, or the
                generator returned invalid data (naming the key and the field).
            GenerationTimeoutError: if the generator ran past `generation_timeout`, or
                another process's generation of the key did not end within it plus the
                lease time.
            DatabaseUnavailableError: if the server cannot be reached.
            LookupClosedError: if the lookup was closed.
            PricingStoreError: if the generated row was deleted before it could be read.
            Exception: whatever the generator raised; nothing was stored.
        """
        generations = self._generations
        if generations is None:
            raise InvalidValueError(
                "generator", "get_or_generate needs PricingLookup(generator=...)"
            )
        with self._under_way:
            return await self._get_or_generate(generations, brand, group, model)

    async def _get_or_generate(
        self, generations: Generations, brand: str, group: str, model: str | None
    ) -> PriceReference:
        asked_at = time.monotonic()
        reference = await self.get(brand, group, model)
        if reference is not None and (model is None or reference.model_found):
            return reference
        key = canonical_brand, canonical_group, canonical_model = self._canonical(
            brand, group, model
        )
        missing: list[tuple[Kind, tuple[str, ...]]] = []
        if reference is None:
            missing.append((BRAND_GROUP, (canonical_brand, canonical_group)))
        if canonical_model is not None:
            missing.append((MODEL, (canonical_brand, canonical_group, canonical_model)))
        await asyncio.gather(*(generations.ensure(kind, part, asked_at) for kind, part in missing))
        return await self._read_stored(key)

    async def _read_stored(self, key: Key) -> PriceReference:
        """The stored reference, read from the primary, which the generation wrote to."""
        cache = self._cache
        token = cache.token(key) if cache is not None else None
        row = await self._primary.fetchrow(GET_SQL, *key)
        if row is None:
            raise PricingStoreError("the generated row was deleted before it could be read")
        reference = reference_from_row(row, self._parse_list)
        if cache is not None and token is not None:
            cache.put(key, key, reference, token)
        return reference

    def _on_change(self, change: Change) -> None:
        if self._generations is not None:
            self._generations.changed(*change)

    def stats(self) -> LookupStats:
        """A snapshot of the cache's and the generations' counters."""
        cache, generations = self._cache, self._generations
        if cache is not None:
            cache.tally()
        return LookupStats(
            hits=cache.hits if cache is not None else 0,
            misses=self._miss_count,
            entries=len(cache.entries) if cache is not None else 0,
            evictions=dict(cache.evictions) if cache is not None else {},
            notifications=cache.notifications if cache is not None else 0,
            listening=self._listener is not None and self._listener.listening,
            generations_run=generations.calls if generations is not None else 0,
            generations_failed=generations.failed if generations is not None else 0,
            generations_in_flight=generations.running if generations is not None else 0,
            leases_lost=generations.leases_lost if generations is not None else 0,
        )

    async def get_many(
        self, keys: Iterable[tuple[str, str] | tuple[str, str, str | None]]
    ) -> dict[Any, PriceReference | None]:
        """Return a reference (or None) for every key, in one round trip for all misses.

        Reading a standby, now and then two (see `replay`).

        Each key is `(brand, group)` or `(brand, group, model_or_None)`; the result is keyed by
        the tuples exactly as passed.

        Raises:
            InvalidValueError: naming the key's position, if a key is not valid.
            DatabaseUnavailableError: if the server cannot be reached.
            SchemaNotMigratedError: if the tables are missing.
            LookupClosedError: if the lookup was closed.
        """
        if self.state in (State.CLOSING, State.CLOSED):
            raise LookupClosedError()
        hits, canonical_at, note = self._hits.get, self._canonical.at, self._notes.append
        found: dict[Any, PriceReference | None] = {}
        misses: list[tuple[Any, Key]] = []  # (key as passed, its canonical form)
        for position, key in enumerate(listed_keys(keys)):
            # First, so that a key that is no tuple of strings fails here, hashable or not.
            canonical = canonical_at(position, key)
            hit = hits(canonical, MISSING)
            if hit is not MISSING:
                found[key] = hit  # type: ignore[assignment]
                note(hit or canonical)
                continue
            misses.append((key, canonical))
        self._miss_count += len(misses)
        if misses:
            await self._fetch_many(misses, found)
        return found

    async def _fetch_many(self, misses: list[tuple[Any, Key]], found: dict[Any, Any]) -> None:
        if self.state is not State.OPEN:
            await self.start()
        with self._under_way:
            await self._read_many(misses, found)

    async def _read_many(self, misses: list[tuple[Any, Key]], found: dict[Any, Any]) -> None:
        cache = self._cache
        distinct = list(dict.fromkeys(canonical for _, canonical in misses))
        tokens: dict[Key, Token] = (
            {key: cache.token(key) for key in distinct} if cache is not None else {}
        )
        brands, groups, models = zip(*distinct, strict=True)
        pool = self._pool
        replayed = None
        if cache is not None and cache.active and self._tracks_replay:  # perhaps a standby
            on_standby = self._positions.reader(
                lambda position: all(cache.replayed_enough(key, position) for key in distinct)
            )
            replayed, rows = await pool.run(
                on_standby, GET_MANY_ON_STANDBY_SQL, brands, groups, models
            )
        else:
            rows = await pool.fetch(GET_MANY_SQL, brands, groups, models)
        by_key: dict[Key, PriceReference] = {}
        parse_list = self._parse_list
        for row in rows:
            read = reference_from_row(row, parse_list)
            by_key[key_of(read)] = read  # the canonical key it was asked by
        for original, canonical in misses:
            reference = found[original] = by_key.get(canonical)
            if cache is not None:
                cache.put(canonical, canonical, reference, tokens[canonical], replayed)

    def _driver_pool(self, size: int, *, primary: bool = True) -> DriverPool:
        """Connections of the lookup's own: to the primary (`listen_to`'s), or for reads."""
        settings = self._listen_settings if primary else self._settings
        connect = self._connect_primary if primary else self._connect
        return DriverPool(connect, size, where=settings.where(), timeout=self._pool_timeout)

    async def _connect(self) -> Any:
        return await prepared_for_lookups(await self._open_read(), self._settings)

    async def _connect_primary(self) -> Any:
        return await prepared_for_lookups(await self._open_primary(), self._listen_settings)
