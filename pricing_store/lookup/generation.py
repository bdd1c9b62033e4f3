"""On-demand generation: one generator call per missing key, across tasks and processes.

Inside a process, callers for one key share one in-flight task. Across processes, the task
first claims the key's lease (see `leases`): the claimer generates, the others wait for
the row, woken by the change notification for it or re-checking every `RECHECK_EVERY`
seconds, take over if the lease expires, and give up after the generation timeout plus the
lease time. While the generator runs, no connection is in use and no transaction is open
for it; the row is then stored in one autocommit statement that lets a row stored meanwhile
by anyone else win, retried through an outage only while the lease is surely still held.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from functools import partial

from pricing_store.errors import (
    DatabaseUnavailableError,
    GenerationTimeoutError,
    InvalidValueError,
    LookupClosedError,
)
from pricing_store.lookup.connections import DriverPool
from pricing_store.lookup.generator import BRAND_GROUP, MODEL, GeneratedKey, Kind, PriceGenerator
from pricing_store.lookup.leases import Leases, lease_key
from pricing_store.lookup.lifecycle import result_of
from pricing_store.lookup.telemetry import generation_span, generator_call
from pricing_store.repositories.rows import item_values
from pricing_store.repositories.statements import insert_or_select, parameters, same_key, table_of

RECHECK_EVERY = 0.5
# Seconds a failed generation is remembered, for the callers that asked before it failed.
KEEP_FAILURES = 60.0


def exists_sql(kind: Kind) -> str:
    """`SELECT 1` of the row with the natural key `$1, $2, ...`."""
    key = kind.row_class.natural_key
    condition = same_key(key, parameters(key))
    return f"SELECT 1 FROM {table_of(kind.row_class).fullname} WHERE {condition}"


EXISTS_SQL = {kind.table: exists_sql(kind) for kind in (BRAND_GROUP, MODEL)}


class Generations:
    """Runs the generator for missing keys, once per key, at most `limit` calls at a time."""

    def __init__(
        self,
        generator: PriceGenerator,
        pool: DriverPool,
        *,
        lease_pool: DriverPool,
        timeout: float,
        limit: int,
        lease_seconds: float,
    ) -> None:
        """Generate with `generator`, storing on `pool`.

        The leases get a pool of their own, `lease_pool`: renewing them must never wait
        behind a store that waits for a row another transaction holds.
        """
        self._generator = generator
        self._pool = pool
        self._leases = Leases(lease_pool, lease_seconds)
        self._timeout = timeout
        self._quota = asyncio.Semaphore(limit)
        self._in_flight: dict[tuple[str, GeneratedKey], asyncio.Task[None]] = {}
        self._waiting: dict[tuple[str, GeneratedKey], asyncio.Event] = {}
        # The last failure of each key's generation, and when it ended (time.monotonic()).
        self._failures: dict[tuple[str, GeneratedKey], tuple[float, BaseException]] = {}
        # Set by the lookup's close(): no generator call begins from then on.
        self.closing = False
        self.calls = 0
        self.failed = 0
        self.running = 0

    async def ensure(self, kind: Kind, key: GeneratedKey, asked_at: float) -> None:
        """Return once a row for the canonical `key` is stored, generating it if need be.

        `asked_at` is when the caller asked (time.monotonic()): a generation of the key that
        failed since then fails this caller too, rather than being run again for it.

        Raises:
            GenerationTimeoutError: if the generator ran past the timeout.
            InvalidValueError: naming the key and the field, if it returned invalid data.
            LookupClosedError: if the lookup is closing.
            Exception: whatever the generator raised; nothing was stored.
        """
        name = (kind.table, key)
        failed = self._failures.get(name)
        if failed is not None and failed[0] >= asked_at:
            raise failed[1]
        task = self._in_flight.get(name)
        if task is None:
            if self.closing:  # a generation under way may be joined, not a new one begun
                raise LookupClosedError()
            task = asyncio.get_running_loop().create_task(self._generate(kind, key))
            self._in_flight[name] = task
            task.add_done_callback(partial(self._finished, name))
        await result_of(task)  # a caller that gives up does not cancel the others' generation

    def _finished(self, name: tuple[str, GeneratedKey], task: asyncio.Task[None]) -> None:
        del self._in_flight[name]
        if task.cancelled():
            return
        error = task.exception()  # retrieved, even if every caller has gone
        now = time.monotonic()
        if error is not None:
            self._failures[name] = (now, error)
        # Only callers still in flight can need a failure: keep the recent ones.
        for stale in [each for each, (at, _) in self._failures.items() if at < now - KEEP_FAILURES]:
            del self._failures[stale]

    @property
    def leases_lost(self) -> int:
        """Leases found taken by another process while this one held them."""
        return self._leases.lost

    def changed(self, table: str | None, keys: list[GeneratedKey] | None = None) -> None:
        """Wake the waiters for these keys of `table` (None: of every key, or every table)."""
        for (waiting_table, key), event in list(self._waiting.items()):
            if table in (None, waiting_table) and (keys is None or key in keys):
                event.set()

    async def _generate(self, kind: Kind, key: GeneratedKey) -> None:
        with generation_span(kind.table, key):
            await self._generate_once(kind, key)

    async def _generate_once(self, kind: Kind, key: GeneratedKey) -> None:
        lease = lease_key(kind.table, *key)
        # Another process's generation ends within the timeout, and its lease within the
        # lease time after that: past both, it is stuck or its lease is stranded.
        patience = self._timeout + self._leases.seconds
        give_up_at = time.monotonic() + patience
        while not await self._stored(kind, key):
            async with self._quota:
                if await self._leases.claim(lease):
                    try:
                        # Stored by the previous holder just before it let go?
                        if not await self._stored(kind, key):
                            if self.closing:  # an LLM call begun now would only be cut
                                raise LookupClosedError()
                            generated = await self._call(kind, key)
                            await self._store_through_outages(kind, key, generated, lease)
                    finally:
                        await self._leases.release(lease)
                    return
            left = give_up_at - time.monotonic()
            if left <= 0:
                raise GenerationTimeoutError(f"{kind.describe(key)} in another process", patience)
            await self._wait(kind.table, key, min(left, RECHECK_EVERY))

    async def _stored(self, kind: Kind, key: GeneratedKey) -> bool:
        return await self._pool.fetchrow(EXISTS_SQL[kind.table], *key) is not None

    async def _call(self, kind: Kind, key: GeneratedKey) -> object:
        method: Callable[..., Awaitable[object]] = getattr(self._generator, kind.method)
        self.calls += 1
        self.running += 1
        try:
            async with generator_call(kind.table), asyncio.timeout(self._timeout) as scope:
                return await method(*key)
        except TimeoutError as error:
            self.failed += 1
            if scope.expired():
                raise GenerationTimeoutError(kind.describe(key), self._timeout) from error
            raise
        except BaseException:
            self.failed += 1
            raise
        finally:
            self.running -= 1

    async def _store(self, kind: Kind, key: GeneratedKey, generated: object) -> None:
        natural_key = dict(zip(kind.row_class.natural_key, key, strict=True))
        try:
            values = item_values(kind.row_class, generated, key=natural_key)
        except InvalidValueError as error:
            self.failed += 1
            field = f"generated {kind.describe(key)}: {error.field}"
            raise InvalidValueError(field, error.rule) from None
        statement = insert_or_select(kind.row_class, frozenset(values))
        await self._pool.fetchrow(statement.sql, *statement.arguments(values))

    async def _store_through_outages(
        self, kind: Kind, key: GeneratedKey, generated: object, lease: str
    ) -> None:
        """Store what the generator made, retrying while the server cannot be reached.

        A failover takes seconds; the LLM call it would waste took as long and costs money.
        But only while the lease is surely held: past it, another process may generate.
        """
        while True:
            try:
                await self._store(kind, key, generated)
                return
            except DatabaseUnavailableError:
                await asyncio.sleep(RECHECK_EVERY)
                if not self._leases.holds(lease):
                    raise

    async def _wait(self, table: str, key: GeneratedKey, seconds: float) -> None:
        """Until a change to the key is heard of, or `seconds` at most."""
        event = self._waiting.setdefault((table, key), asyncio.Event())
        try:
            with contextlib.suppress(TimeoutError):  # the timeout's own; a cancel goes through
                async with asyncio.timeout(seconds):
                    await event.wait()
        finally:
            self._waiting.pop((table, key), None)

    async def finish(self, wait: float) -> set[asyncio.Task[None]]:
        """Give the generations under way `wait` seconds; cancel and return the rest.

        Their callers get LookupClosedError; their leases are left to expire.
        """
        tasks = set(self._in_flight.values())
        if tasks:
            _, tasks = await asyncio.wait(tasks, timeout=wait)
        for task in tasks:
            task.cancel()
        return tasks

    async def close(self) -> None:
        """Stop renewing leases and close their connections, within CLOSE_GRACE seconds."""
        await self._leases.close()
