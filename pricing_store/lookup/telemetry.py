"""OpenTelemetry metrics and spans for lookups, when `opentelemetry-api` is installed.

The counters a lookup keeps anyway (`stats()`) are reported by observable instruments,
read only when the application's MeterProvider collects: a cached hit pays nothing for
them. A generation, which waits on an LLM for seconds, records its duration and outcome
as it ends, inside a `pricing_store.generate` span whose child is the generator's call.
Nothing here imports OpenTelemetry until a lookup is made with it installed, and without
it every function is a no-op.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
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


class Telemetry:
    """The package's instruments, made once per process, reading every live lookup.

    Counts of a lookup that closed are kept (`retire`), so that the counters only grow.
    """

    def __init__(self) -> None:
        from opentelemetry import metrics, trace

        # Each live lookup, and whether it caches (only those have a listener).
        self._lookups: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
        self._retired: dict[str, float] = {}
        self._retired_evictions: dict[str, int] = {}
        self._lock = threading.Lock()  # collection may run on the exporter's thread
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
                name, [self._reader(field)], unit="1", description=description
            )
        meter.create_observable_counter(
            "pricing_store.cache.evictions",
            [self._evictions],
            unit="1",
            description="Cache entries dropped, by cause",
        )
        meter.create_observable_gauge(
            "pricing_store.cache.entries", [self._reader("entries", retired=False)], unit="1"
        )
        meter.create_observable_gauge(
            "pricing_store.listener.up",
            [self._listening],
            unit="1",
            description="1 while every caching lookup listens for changes",
        )
        self.calls = meter.create_counter(
            "pricing_store.generation.calls",
            unit="1",
            description="Generator calls, by outcome (ok, error, timeout)",
        )
        self.duration = meter.create_histogram(
            "pricing_store.generation.duration", unit="s", description="Generator calls' time"
        )

    def register(self, lookup: Observed, *, caching: bool) -> None:
        """Report this lookup's counters from now on."""
        with self._lock:
            self._lookups[lookup] = caching

    def retire(self, lookup: Observed) -> None:
        """The lookup closed: keep its final counts, stop reading it."""
        with self._lock:
            if lookup not in self._lookups:
                return
            del self._lookups[lookup]
            stats = lookup.stats()
            for field in ("hits", "misses", "notifications", "leases_lost"):
                self._retired[field] = self._retired.get(field, 0) + getattr(stats, field)
            for cause, count in stats.evictions.items():
                self._retired_evictions[cause] = self._retired_evictions.get(cause, 0) + count

    def _snapshots(self, *, caching_only: bool = False) -> list[LookupStats]:
        with self._lock:
            return [
                lookup.stats()
                for lookup, caching in list(self._lookups.items())
                if caching or not caching_only
            ]

    def _reader(self, field: str, *, retired: bool = True) -> Callable[[Any], Iterator[Any]]:
        def observe(options: Any) -> Iterator[Any]:
            total = sum(getattr(stats, field) for stats in self._snapshots())
            yield self._observation(total + (self._retired.get(field, 0) if retired else 0))

        return observe

    def _evictions(self, options: Any) -> Iterator[Any]:
        totals = dict(self._retired_evictions)
        for stats in self._snapshots():
            for cause, count in stats.evictions.items():
                totals[cause] = totals.get(cause, 0) + count
        for cause, count in totals.items():
            yield self._observation(count, {"cause": cause})

    def _listening(self, options: Any) -> Iterator[Any]:
        caching = self._snapshots(caching_only=True)
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
    generator's own), `error` for any other exception or a cancellation, else `ok`.
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
    finally:
        attributes = {"outcome": outcome, "pricing_store.table": table}
        instruments.calls.add(1, attributes)
        instruments.duration.record(time.monotonic() - started, attributes)
