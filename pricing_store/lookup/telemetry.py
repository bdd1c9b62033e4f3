"""OpenTelemetry metrics and spans for lookups, when `opentelemetry-api` is installed.

The counters a lookup keeps anyway (`stats()`) are reported by observable instruments,
read only when the application's MeterProvider collects: a cached hit pays nothing for
them. A generation, which waits on an LLM for seconds, records its duration and outcome
as it ends, inside a `pricing_store.generate` span whose child is the generator's call.
Nothing here imports OpenTelemetry until a lookup is made with it installed, and without
it every function is a no-op.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import threading
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pricing_store.lookup.stats import LookupStats

NAME = "pricing_store"


class Observed(Protocol):
    """What the instruments read: a lookup."""

    def stats(self) -> LookupStats:
        """Its counters now."""
        ...


# A counter's series: the LookupStats field it reads, and the eviction cause ("" for none).
Series = tuple[str, str]
# Counters summed over lookups, by the LookupStats field each reads.
COUNTED = ("hits", "misses", "notifications", "leases_lost")
# How long one collection waits, in all, for lookups' event loops to read their counters.
READ_TIMEOUT = 1.0
# How long a loop that did not answer in time is not waited for again.
SILENT_FOR = 5.0
# Durations of generator calls (LLM calls: a fraction of a second to minutes).
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Watched:
    """A registered lookup: whether it caches, its event loop, its last counters read."""

    def __init__(self, lookup: Observed, caching: bool, loop: asyncio.AbstractEventLoop) -> None:
        self.ref = weakref.ref(lookup)
        self.caching = caching
        self.loop = loop
        self.last: LookupStats | None = None


class Telemetry:
    """The package's instruments, made once per process, reading every open lookup.

    A collection may run on any thread (a Prometheus exporter's, say), while a lookup's
    counters belong to its event loop: they are read there (`call_soon_threadsafe`), or
    the last reading is used if the loop does not answer within READ_TIMEOUT (for the whole
    collection). The counts of a lookup that closed are kept; of one dropped unclosed, as
    last read. Each counter reports the most it ever reported: counters never go back.
    """

    def __init__(self) -> None:
        from opentelemetry import metrics, trace

        self._watched: dict[int, Watched] = {}
        # Kept counts, by (field, cause): ("hits", ""), ..., ("evictions", "size").
        self._retired: Counter[Series] = Counter()
        self._highest: dict[Series, float] = {}
        self._lock = threading.Lock()
        # Lookups garbage-collected unclosed. A finalizer may run on any thread at any
        # allocation, even one holding `_lock`: it only appends here (a deque's append is
        # atomic), and `_lock`'s holders fold these in.
        self._dropped: collections.deque[tuple[int, Watched]] = collections.deque()
        # Loops that did not answer in time, and until when they are not waited for again:
        # one collection runs every callback in turn, and must not wait in each.
        self._silent_until: dict[int, float] = {}
        meter = metrics.get_meter(NAME)
        self.tracer = trace.get_tracer(NAME)
        self._observation = metrics.Observation
        counters = {
            "pricing_store.cache.hits": ("hits", "Cached lookups served from memory"),
            "pricing_store.cache.misses": ("misses", "Lookups that read the database"),
            "pricing_store.notifications": ("notifications", "Change notifications heard"),
            "pricing_store.lease.lost": ("leases_lost", "Generation leases taken over"),
        }
        for name, (field, description) in counters.items():
            meter.create_observable_counter(
                name, [self._counter(field)], unit="1", description=description
            )
        meter.create_observable_counter(
            "pricing_store.cache.evictions",
            [self._evictions],
            unit="1",
            description="Cache entries dropped, by cause",
        )
        meter.create_observable_gauge("pricing_store.cache.entries", [self._entries], unit="1")
        meter.create_observable_gauge(
            "pricing_store.listener.up",
            [self._listening],
            unit="1",
            description="1 while every open caching lookup listens for changes",
        )
        self.calls = meter.create_counter(
            "pricing_store.generation.calls",
            unit="1",
            description="Generator calls, by outcome (ok, error, timeout, cancelled)",
        )
        self.duration = meter.create_histogram(
            "pricing_store.generation.duration",
            unit="s",
            description="Generator calls' time",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    def register(self, lookup: Observed, *, caching: bool) -> None:
        """Report this open lookup's counters from now on; called on its event loop."""
        watched = Watched(lookup, caching, asyncio.get_running_loop())
        with self._lock:
            self._watched[id(lookup)] = watched
        weakref.finalize(lookup, self._dropped.append, (id(lookup), watched))

    def retire(self, lookup: Observed) -> None:
        """The lookup closed (on its event loop): keep its final counts, read it no more."""
        final = lookup.stats()  # on its loop, outside the lock
        with self._lock:
            self._fold_dropped()
            if self._watched.pop(id(lookup), None) is not None:
                self._keep(final)

    def _fold_dropped(self) -> None:
        """Under `_lock`: keep the counts of lookups dropped unclosed, as last read."""
        while self._dropped:
            key, watched = self._dropped.popleft()
            if self._watched.get(key) is watched:
                del self._watched[key]
                if watched.last is not None:
                    self._keep(watched.last)

    def _keep(self, stats: LookupStats) -> None:
        for field in COUNTED:
            self._retired[field, ""] += getattr(stats, field)
        for cause, count in stats.evictions.items():
            self._retired["evictions", cause] += count

    def _collect(self) -> tuple[list[tuple[Watched, LookupStats]], Counter[Series]]:
        """Every open lookup's counters, and the kept counts, taken together.

        A collection waits READ_TIMEOUT at most in all: a loop that does not answer in time
        is not waited for again for SILENT_FOR (the collection's other callbacks), and its
        lookups' last readings are used.
        """
        with self._lock:
            self._fold_dropped()
            watched = list(self._watched.values())
            retired = Counter(self._retired)
        deadline = time.monotonic() + READ_TIMEOUT
        read = []
        for each in watched:
            answering = self._silent_until.get(id(each.loop), 0.0) <= time.monotonic()
            if answering and not self._read(each, deadline - time.monotonic()):
                self._silent_until[id(each.loop)] = time.monotonic() + SILENT_FOR
            if each.last is not None:
                read.append((each, each.last))
        return read, retired

    def _read(self, watched: Watched, wait: float) -> bool:
        """Read the lookup's counters into `watched.last`; False if its loop did not answer."""
        lookup = watched.ref()
        if lookup is None:
            return True
        loop = watched.loop
        try:
            on_its_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_its_loop = False
        if on_its_loop or not loop.is_running():  # nothing else touches its counters now
            watched.last = lookup.stats()
            return True
        answer: concurrent.futures.Future[LookupStats] = concurrent.futures.Future()

        def read_there() -> None:
            try:
                answer.set_result(lookup.stats())
            except BaseException as error:
                answer.set_exception(error)

        try:
            loop.call_soon_threadsafe(read_there)
            watched.last = answer.result(timeout=max(0.0, wait))
        except (RuntimeError, concurrent.futures.TimeoutError):
            return False  # the loop closed, or is busy: its last reading stands
        return True

    def _monotonic(self, series: Series, value: float) -> float:
        with self._lock:
            highest = max(self._highest.get(series, 0.0), value)
            self._highest[series] = highest
        return highest

    def _counter(self, field: str) -> Callable[[Any], Iterator[Any]]:
        def observe(options: Any) -> Iterator[Any]:
            read, retired = self._collect()
            total = sum(getattr(stats, field) for _, stats in read) + retired[field, ""]
            yield self._observation(self._monotonic((field, ""), total))

        return observe

    def _evictions(self, options: Any) -> Iterator[Any]:
        read, retired = self._collect()
        totals = Counter(
            {cause: n for (field, cause), n in retired.items() if field == "evictions"}
        )
        for _, stats in read:
            totals.update(stats.evictions)
        for cause, count in totals.items():
            yield self._observation(self._monotonic(("evictions", cause), count), {"cause": cause})

    def _entries(self, options: Any) -> Iterator[Any]:
        read, _ = self._collect()
        yield self._observation(sum(stats.entries for _, stats in read))

    def _listening(self, options: Any) -> Iterator[Any]:
        caching = [stats for watched, stats in self._collect()[0] if watched.caching]
        if caching:
            yield self._observation(int(all(stats.listening for stats in caching)))


_telemetry: Telemetry | None = None
_absent = False
_made = threading.Lock()


def telemetry() -> Telemetry | None:
    """The process's instruments, made on first use; None without OpenTelemetry."""
    global _telemetry, _absent
    if _telemetry is not None or _absent:
        return _telemetry
    with _made:
        if _telemetry is None and not _absent:
            try:
                _telemetry = Telemetry()
            except ImportError:  # the `otel` extra is not installed
                _absent = True
    return _telemetry


@contextlib.contextmanager
def generation_span(table: str, key: tuple[str, ...]) -> Iterator[None]:
    """A `pricing_store.generate` span around one generation of a key, errors recorded."""
    instruments = telemetry()
    if instruments is None:
        yield
        return
    with instruments.tracer.start_as_current_span(
        "pricing_store.generate",
        attributes={"pricing_store.table": table, "pricing_store.key": list(key)},
    ):
        yield


@contextlib.asynccontextmanager
async def generator_call(table: str) -> AsyncIterator[None]:
    """The generator's call: a child span, its duration and its outcome.

    The outcome is `timeout` for a TimeoutError (the generation timeout's, or the
    generator's own), `cancelled` for a cancellation (the lookup closing), `error` for any
    other exception, else `ok` (a row that then fails validation is still `ok` here, and
    counted in `stats().generations_failed`).
    """
    instruments = telemetry()
    if instruments is None:
        yield
        return
    started = time.monotonic()
    outcome = "error"
    try:
        with instruments.tracer.start_as_current_span(
            "pricing_store.generator", attributes={"pricing_store.table": table}
        ):
            try:
                yield
                outcome = "ok"
            except TimeoutError:
                outcome = "timeout"
                raise
            except asyncio.CancelledError:
                outcome = "cancelled"  # a caller or close() gave up: not the generator's fault
                raise
    finally:
        attributes = {"outcome": outcome, "pricing_store.table": table}
        instruments.calls.add(1, attributes)
        instruments.duration.record(time.monotonic() - started, attributes)
