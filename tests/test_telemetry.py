"""OpenTelemetry: a real Prometheus scrape of a lookup's metrics, and its generation spans.

The SDK, its Prometheus exporter and an in-memory span exporter are installed once for the
run (OpenTelemetry's global providers can be set only once), as an application would.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine

from pricing_store import GenerationTimeoutError, PricingLookup
from tests.helpers import ROOT
from tests.provision import free_port
from tests.test_generation import FakeLLM

SPANS = InMemorySpanExporter()


@pytest.fixture(scope="module")
def scrape_url() -> Iterator[str]:
    """`/metrics` of a Prometheus endpoint serving the SDK's metrics, as a service wires it."""
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1")
    metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(SPANS))
    trace.set_tracer_provider(tracer_provider)
    yield f"http://127.0.0.1:{port}/metrics"
    server.shutdown()
    thread.join()


async def scraped(url: str) -> dict[str, float]:
    """Each sample of the page, by its name and labels as Prometheus prints them."""
    page = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    samples = {}
    for line in page.decode().splitlines():
        match = re.fullmatch(r"(pricing_store_\S+?)(\{[^}]*\})? (\S+)", line)
        if match:
            name, labels, value = match.groups()
            samples[name + (labels or "")] = float(value)
    return samples


def delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return sample(after, name) - sample(before, name)


def sample(samples: dict[str, float], prefix: str, **labels: str) -> float:
    """The sample whose name is `prefix` and whose labels include these; 0 if none."""
    for name, value in samples.items():
        if name.split("{")[0] == prefix and all(f'{k}="{v}"' in name for k, v in labels.items()):
            return value
    return 0.0


@pytest.mark.usefixtures("session_factory")
async def test_a_prometheus_scrape_shows_what_stats_says(
    scrape_url: str, engine: AsyncEngine
) -> None:
    before = await scraped(scrape_url)
    llm = FakeLLM()
    async with PricingLookup(engine, cache_size=100, generator=llm) as lookup:
        await lookup.get_or_generate("Scraped", "jeans")  # a miss, a generation, a read
        for _ in range(5):
            await lookup.get("Scraped", "jeans")
        await lookup.get("Nobody", "jeans")
        llm.failure = RuntimeError("the LLM is down")
        with pytest.raises(RuntimeError):
            await lookup.get_or_generate("Failing", "jeans")
        stats = lookup.stats()
        after = await scraped(scrape_url)
        assert sample(after, "pricing_store_listener_up") == 1.0
        assert sample(after, "pricing_store_cache_entries") == stats.entries
    assert stats.hits >= 5
    for name, expected in (
        ("pricing_store_cache_hits_total", stats.hits),
        ("pricing_store_cache_misses_total", stats.misses),
        ("pricing_store_notifications_total", stats.notifications),
        ("pricing_store_lease_lost_total", stats.leases_lost),
    ):
        assert delta(before, after, name) == expected, name
    for outcome, expected in (("ok", 1), ("error", 1), ("timeout", 0)):
        name = "pricing_store_generation_calls_total"
        counted = sample(after, name, outcome=outcome) - sample(before, name, outcome=outcome)
        assert counted == expected, outcome
    assert stats.generations_run == 2
    assert stats.generations_failed == 1
    durations = "pricing_store_generation_duration_seconds_count"
    assert sample(after, durations, outcome="ok") - sample(before, durations, outcome="ok") == 1
    evicted = sum(
        sample(after, "pricing_store_cache_evictions_total", cause=cause)
        - sample(before, "pricing_store_cache_evictions_total", cause=cause)
        for cause in stats.evictions
    )
    assert evicted == sum(stats.evictions.values())

    # Closed, its counts stay: counters never go back.
    later = await scraped(scrape_url)
    assert delta(before, later, "pricing_store_cache_hits_total") == stats.hits


@pytest.mark.usefixtures("session_factory")
async def test_each_generation_is_a_span_with_the_generator_call_as_its_child(
    scrape_url: str, engine: AsyncEngine
) -> None:
    SPANS.clear()
    llm = FakeLLM(seconds=0.05)
    async with PricingLookup(engine, generator=llm, generation_timeout=0.5) as lookup:
        await lookup.get_or_generate("Traced", "jeans", "501")
        llm.seconds = 2.0
        with pytest.raises(GenerationTimeoutError):
            await lookup.get_or_generate("Slow", "jeans")
    finished = SPANS.get_finished_spans()
    spans = {
        (span.name, key_of(span)): span
        for span in finished
        if span.name == "pricing_store.generate"
    }
    generate = spans[("pricing_store.generate", ("Traced", "jeans"))]
    model = spans[("pricing_store.generate", ("Traced", "jeans", "501"))]
    assert generate.attributes["pricing_store.table"] == "brand_groups"  # type: ignore[index]
    assert model.attributes["pricing_store.table"] == "models"  # type: ignore[index]
    parents = {
        span.parent.span_id
        for span in finished
        if span.name == "pricing_store.generator" and span.parent
    }
    assert parents >= {generate.context.span_id, model.context.span_id}
    slow = spans[("pricing_store.generate", ("Slow", "jeans"))]
    assert slow.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in slow.events)


def test_without_opentelemetry_nothing_changes_and_nothing_is_imported() -> None:
    """The package works, and reports nothing, where the extra is not installed."""
    script = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from pricing_store.lookup import telemetry\n"
        "assert telemetry.telemetry() is None\n"
        "with telemetry.generation_span('brand_groups', ('a', 'b')): pass\n"
        "print(sorted(name for name in sys.modules if name.startswith('opentelemetry')))\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == "['opentelemetry']"  # only the blocked name itself


def key_of(span: ReadableSpan) -> tuple[str, ...]:
    """The key a generation span names."""
    key = (span.attributes or {}).get("pricing_store.key")
    assert isinstance(key, tuple | list)
    return tuple(str(part) for part in key)


@pytest.mark.usefixtures("session_factory")
async def test_scrapes_from_another_thread_during_hits_lose_and_double_nothing(
    scrape_url: str, engine: AsyncEngine
) -> None:
    """The exporter's thread reads the counters through the lookup's loop, never beside it."""
    before = await scraped(scrape_url)
    seen: list[float] = []
    done = threading.Event()

    def scrape_until_done() -> None:
        while not done.is_set():
            page = asyncio.run(scraped(scrape_url))
            seen.append(sample(page, "pricing_store_cache_hits_total"))

    switching = sys.getswitchinterval()
    async with PricingLookup(engine, cache_size=10) as lookup:
        await lookup.get("Nobody", "jeans")  # cached as unknown: every later get is a hit
        scraper = threading.Thread(target=scrape_until_done)
        scraper.start()
        sys.setswitchinterval(1e-6)  # threads switch often: a race would show
        try:
            for _round in range(200):
                for _ in range(1_000):
                    await lookup.get("Nobody", "jeans")
                await asyncio.sleep(0.001)  # the loop answers the scraper's reads here
        finally:
            sys.setswitchinterval(switching)
            done.set()
            await asyncio.to_thread(scraper.join)
        assert lookup.stats().hits == 200_000
    after = await scraped(scrape_url)
    assert len(seen) > 5
    assert seen == sorted(seen)  # never back
    assert delta(before, after, "pricing_store_cache_hits_total") == 200_000


async def test_counters_are_read_on_the_lookups_own_loop_whatever_thread_collects(
    scrape_url: str,
) -> None:
    """stats() reorders and tallies the cache: only the lookup's loop may run it."""
    from pricing_store.lookup.stats import LookupStats
    from pricing_store.lookup.telemetry import telemetry

    class Lookup:
        def __init__(self) -> None:
            self.threads: set[int] = set()

        def stats(self) -> LookupStats:
            self.threads.add(threading.get_ident())
            return LookupStats(7, 1, 1, {"key": 2}, 3, True, 0, 0, 0)

    instruments = telemetry()
    assert instruments is not None
    lookup = Lookup()
    instruments.register(lookup, caching=True)
    try:
        page = await scraped(scrape_url)  # Prometheus' thread collects
    finally:
        instruments.retire(lookup)
    assert lookup.threads == {threading.get_ident()}  # this loop's thread, and no other
    assert sample(page, "pricing_store_cache_hits_total") >= 7


async def test_a_lookup_dropped_unclosed_while_the_instruments_are_busy_deadlocks_nothing(
    scrape_url: str,
) -> None:
    """Its finalizer may run on any thread, at any allocation, even inside the instruments."""
    from pricing_store.lookup.stats import LookupStats
    from pricing_store.lookup.telemetry import telemetry

    class Lookup:
        def stats(self) -> LookupStats:
            return LookupStats(5, 0, 0, {}, 0, True, 0, 0, 0)

    instruments = telemetry()
    assert instruments is not None
    before = sample(await scraped(scrape_url), "pricing_store_cache_hits_total")
    dropped = Lookup()
    instruments.register(dropped, caching=False)
    await scraped(scrape_url)  # read once: its counts as last read are what is kept

    def drop_inside() -> None:
        nonlocal dropped
        with instruments._lock:  # as when a collection holds it and the collector runs
            del dropped  # the finalizer runs here, now

    dropping = threading.Thread(target=drop_inside, daemon=True)
    dropping.start()
    dropping.join(timeout=5)
    assert not dropping.is_alive()
    after = sample(await scraped(scrape_url), "pricing_store_cache_hits_total")
    assert after - before == 5  # kept once it is gone
