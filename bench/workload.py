"""`make workload`: the production shape, with pricing reads and LLM generation on demand.

Four service processes read Zipf-distributed Brand×Groups (20,000 keys, 2% of them missing
at the start) through `get_or_generate`, with a fake LLM of 1-3 s latency, while a writer
process commits upserts of existing keys at 20/s. The same load runs twice, on the same
server: through `PricingLookup` (cached, generation outside any transaction), then through
the code a service would write without it (the baseline: the repositories, a session per
request, the LLM called outside any transaction, the row stored with `get_or_create`).
`--json` prints the numbers as JSON instead of the table; `--seconds N` shortens the
steady load.

`--failover` runs the `PricingLookup` load instead on a primary and a synchronous standby of
its own, named together in one multi-host URL: a third of the way in, the primary is
stopped as a crash would stop it, and a second later the standby is promoted. The table
then says how soon every process was served again, what errors callers saw, and whether
any committed write was lost or any key generated twice.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import URL

from bench.bench import migrated
from pricing_store import (
    BrandGroupRepository,
    DatabaseUnavailableError,
    PricingLookup,
    create_engine,
    create_session_factory,
)
from pricing_store.db import database_url, driver_settings
from tests.provision import (
    OwnServer,
    Standby,
    asyncpg_dsn,
    free_port,
    postgres_server,
    server_source,
    throwaway_database,
)

SERVICES = 4
BRAND_GROUPS = 20_000
MISSING_SHARE = 0.02
ZIPF_EXPONENT = 1.1
LLM_SECONDS = (1.0, 3.0)
WRITES_PER_SECOND = 20
SECONDS = 30.0
TASKS_PER_SERVICE = 64
CACHE_SIZE = 10_000
# Latencies kept per process and kind for the percentiles (a uniform sample).
SAMPLE = 50_000
SEED = 20261202
# The scenarios: through PricingLookup, and the baseline a service would write without it.
LOOKUP, BASELINE = "lookup", "repositories"


def brand(number: int) -> str:
    """The brand of the Brand×Group numbered `number` (its group is always jeans)."""
    return f"Brand {number}"


def missing_numbers() -> set[int]:
    """The Brand×Groups absent at the start, spread over the popularity ranks."""
    chosen = random.Random(SEED).sample(range(BRAND_GROUPS), int(BRAND_GROUPS * MISSING_SHARE))
    return set(chosen)


class ZipfKeys:
    """Brand×Group numbers drawn with Zipf popularity; rank and number are shuffled apart."""

    def __init__(self, seed: int, numbers: list[int] | None = None) -> None:
        self.numbers = numbers if numbers is not None else list(range(BRAND_GROUPS))
        random.Random(SEED).shuffle(self.numbers)
        weights = [1 / rank**ZIPF_EXPONENT for rank in range(1, len(self.numbers) + 1)]
        self.cumulative = list(_accumulate(weights))
        self.random = random.Random(seed)
        self.drawn: list[int] = []

    def next(self) -> int:
        """One number; drawn a thousand at a time, which is cheaper per key."""
        if not self.drawn:
            self.drawn = self.random.choices(self.numbers, cum_weights=self.cumulative, k=1000)
        return self.drawn.pop()


def _accumulate(values: list[float]) -> list[float]:
    total, out = 0.0, []
    for value in values:
        total += value
        out.append(total)
    return out


class FakeLLM:
    """Answers a Brand×Group after 1-3 s, counting calls per brand."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.calls: dict[str, int] = {}

    async def brand_group(self, brand: str, group: str) -> dict[str, object]:
        """A plausible row, after the LLM's latency."""
        self.calls[brand] = self.calls.get(brand, 0) + 1
        await asyncio.sleep(self.random.uniform(*LLM_SECONDS))
        return {"base_price": "19.99", "expected_origins": ["Portugal"]}

    async def model(self, brand: str, group: str, model: str) -> dict[str, object]:
        """Never called: the workload prices Brand×Groups."""
        raise AssertionError("the workload asks for no model")


def version_of(trends: tuple[str, ...] | list[str]) -> int:
    """The writer's version stamp of a row (0 for rows as loaded or generated)."""
    return int(trends[0][1:]) if trends and trends[0].startswith("v") else 0


async def service(url: str, scenario: str, start_at: float, seconds: float, index: int) -> Any:
    """One service process: TASKS_PER_SERVICE tasks pricing items until the time is up."""
    engine = create_engine(url, pool_timeout=10)
    llm = FakeLLM(SEED + index)
    missing = missing_numbers()
    served_once: set[int] = set()
    latencies = {"hit": array.array("d"), "generated": array.array("d")}
    last_served: dict[tuple[int, int], float] = {}  # (number, version) -> latest start
    errors: dict[str, int] = {}
    last_unavailable_at = 0.0
    lookups = 0

    lookup = PricingLookup(engine, cache_size=CACHE_SIZE, generator=llm)
    sessions = create_session_factory(engine)

    async def through_lookup(number: int) -> tuple[str, ...]:
        return (await lookup.get_or_generate(brand(number), "jeans")).expected_trends

    async def through_repositories(number: int) -> tuple[str, ...]:
        """The baseline: what a service writes with the repositories alone."""
        async with sessions() as session:
            row = await BrandGroupRepository(session).find_by_brand_and_group(
                brand(number), "jeans"
            )
        if row is None:
            generated = await llm.brand_group(brand(number), "jeans")  # no transaction open
            async with sessions.begin() as session:
                row, _ = await BrandGroupRepository(session).get_or_create(
                    {"brand": brand(number), "group_name": "jeans", **generated}
                )
        return tuple(row.expected_trends)

    price: Callable[[int], Awaitable[tuple[str, ...]]] = (
        through_lookup if scenario == LOOKUP else through_repositories
    )
    if scenario == LOOKUP:
        await lookup.start()
    deadline = start_at + seconds

    async def worker(seed: int) -> None:
        nonlocal lookups, last_unavailable_at
        keys = ZipfKeys(seed)
        while (started := time.time()) < deadline:
            number = keys.next()
            try:
                trends = await price(number)
            except Exception as error:
                errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
                if isinstance(error, DatabaseUnavailableError):
                    last_unavailable_at = time.time()
                    await asyncio.sleep(0.05)  # as a service backs off, not spinning
                continue
            took = time.time() - started
            waited = number in missing and number not in served_once
            served_once.add(number)
            latencies["generated" if waited else "hit"].append(took)
            version = (number, version_of(trends))
            last_served[version] = max(last_served.get(version, 0.0), started)
            lookups += 1

    await asyncio.sleep(max(0.0, start_at - time.time()))
    await asyncio.gather(*(worker(SEED * 1000 + index * 100 + n) for n in range(TASKS_PER_SERVICE)))
    stats = lookup.stats()
    await lookup.close()
    await engine.dispose()
    return {
        "lookups": lookups,
        "seconds": seconds,
        "latencies": {
            kind: random.sample(list(values), min(SAMPLE, len(values)))
            for kind, values in latencies.items()
        },
        "generator_calls": llm.calls,
        "requested_missing": sorted(served_once & missing),
        "errors": errors,
        "last_unavailable_at": last_unavailable_at,
        "hits": stats.hits,
        "misses": stats.misses,
        "last_served": [[number, v, at] for (number, v), at in last_served.items()],
    }


async def writer(url: str, start_at: float, seconds: float) -> Any:
    """Upserts of existing keys at WRITES_PER_SECOND, each committed; records commit times."""
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    missing = missing_numbers()
    keys = ZipfKeys(SEED - 1, [n for n in range(BRAND_GROUPS) if n not in missing])
    commits: list[list[float]] = []
    unavailable = 0
    await asyncio.sleep(max(0.0, start_at - time.time()))
    version = 0
    next_write = start_at
    while (now := time.time()) < start_at + seconds:
        await asyncio.sleep(max(0.0, next_write - now))
        next_write = max(next_write + 1 / WRITES_PER_SECOND, time.time())
        version += 1
        number = keys.next()
        try:
            async with sessions.begin() as session:
                await BrandGroupRepository(session).upsert(
                    {
                        "brand": brand(number),
                        "group_name": "jeans",
                        "base_price": 25,
                        "expected_trends": [f"v{version}"],
                    }
                )
        except DatabaseUnavailableError:
            unavailable += 1  # not committed: it may not be found later, nor need be
            continue
        commits.append([number, version, time.time()])
    await engine.dispose()
    return {"commits": commits, "unavailable": unavailable}


async def load(url: URL) -> None:
    """The Brand×Groups present at the start; nothing else."""
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.execute(
            text("TRUNCATE public.brand_groups, public.pricing_store_generation_leases")
        )
    missing = missing_numbers()
    async with create_session_factory(engine).begin() as session:
        await BrandGroupRepository(session).bulk_upsert(
            {"brand": brand(number), "group_name": "jeans", "base_price": 25}
            for number in range(BRAND_GROUPS)
            if number not in missing
        )
    await engine.dispose()


async def peak_connections(url: URL, until: asyncio.Event) -> dict[str, int]:
    """The most connections to the database at once, and the most idle in a transaction."""
    sampler = await asyncpg.connect(asyncpg_dsn(url))
    peaks = {"connections": 0, "idle_in_transaction": 0}
    try:
        while not until.is_set():
            total, idle = await sampler.fetchrow(
                "SELECT count(*), count(*) FILTER (WHERE state = 'idle in transaction') "
                "FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
            peaks["connections"] = max(peaks["connections"], total)
            peaks["idle_in_transaction"] = max(peaks["idle_in_transaction"], idle)
            await asyncio.sleep(0.1)
    finally:
        await sampler.close()
    return peaks


async def run_processes(
    url: URL, seconds: float, failover: Failover | None = None, scenario: str = LOOKUP
) -> dict[str, Any]:
    """Start the services and the writer together; gather what each reports."""
    start_at = time.time() + 3.0  # every process connected and ready by then
    url_text = url.render_as_string(hide_password=False)
    promoted: asyncio.Task[float] | None = None
    with tempfile.TemporaryDirectory(prefix="pricing-store-workload-") as directory:
        outputs = [Path(directory) / f"{n}.json" for n in range(SERVICES + 1)]
        commands = [
            ["service", url_text, scenario, str(start_at), str(seconds), str(n), str(outputs[n])]
            for n in range(SERVICES)
        ]
        commands.append(
            ["writer", url_text, scenario, str(start_at), str(seconds), "-", str(outputs[-1])]
        )
        processes = [
            await asyncio.create_subprocess_exec(sys.executable, __file__, *command)
            for command in commands
        ]
        done = asyncio.Event()
        if failover is None:
            sampling = asyncio.create_task(peak_connections(url, done))
        else:
            promoted = asyncio.create_task(failover.run(start_at + seconds / 3))
        codes = await asyncio.gather(*(process.wait() for process in processes))
        done.set()
        peaks = await sampling if failover is None else {}
        if any(codes):
            raise SystemExit(f"a workload process failed: exit codes {codes}")
        reports = [json.loads(output.read_text()) for output in outputs]
    summary = summarise(reports[:-1], reports[-1], peaks, seconds)
    if failover is not None and promoted is not None:
        summary.update(await failover.outcome(await promoted, reports[:-1], reports[-1]))
    return summary


def percentile(values: list[float], share: float) -> float | None:
    """The value below which `share` of them lie; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def staleness(services: list[dict[str, Any]], commits: list[list[float]]) -> float:
    """Longest time any process served a version after a newer one had committed.

    A lookup is counted from its start: one that began before the commit may return the
    old version.
    """
    commits_of: dict[int, list[tuple[int, float]]] = {}
    for number, version, at in commits:
        commits_of.setdefault(int(number), []).append((int(version), at))
    worst = 0.0
    for report in services:
        for number, version, served_at in report["last_served"]:
            newer = [at for v, at in commits_of.get(int(number), []) if v > version]
            if newer:
                worst = max(worst, served_at - min(newer))
    return worst


def summarise(
    services: list[dict[str, Any]],
    writer_report: dict[str, Any],
    peaks: dict[str, int],
    seconds: float,
) -> dict[str, Any]:
    """The table's numbers from every process's report."""
    calls: dict[str, int] = {}
    for report in services:
        for key, count in report["generator_calls"].items():
            calls[key] = calls.get(key, 0) + count
    requested = {number for report in services for number in report["requested_missing"]}
    hits = sum(report["hits"] for report in services)
    misses = sum(report["misses"] for report in services)
    latency = {
        kind: [value for report in services for value in report["latencies"][kind]]
        for kind in ("hit", "generated")
    }
    errors: dict[str, int] = {}
    for report in services:
        for kind, count in report["errors"].items():
            errors[kind] = errors.get(kind, 0) + count
    return {
        "lookups_per_second": [report["lookups"] / seconds for report in services],
        "lookups_per_second_total": sum(report["lookups"] for report in services) / seconds,
        "p50_hit_ms": _ms(percentile(latency["hit"], 0.50)),
        "p99_hit_ms": _ms(percentile(latency["hit"], 0.99)),
        "p50_generated_ms": _ms(percentile(latency["generated"], 0.50)),
        "p99_generated_ms": _ms(percentile(latency["generated"], 0.99)),
        "missing_keys_requested": len(requested),
        "generator_calls": sum(calls.values()),
        "generator_calls_per_missing_key": (
            sum(calls.values()) / len(requested) if requested else None
        ),
        "most_calls_for_one_key": max(calls.values(), default=0),
        "errors": sum(errors.values()),
        "errors_by_kind": errors,
        "peak_connections": peaks.get("connections"),
        "peak_idle_in_transaction": peaks.get("idle_in_transaction"),
        "cache_hit_rate": hits / (hits + misses) if hits + misses else None,
        "writes_committed": len(writer_report["commits"]),
        "staleness_ms": staleness(services, writer_report["commits"]) * 1000,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


ROWS = [
    ("lookups/s, total", "lookups_per_second_total", "{:,.0f}"),
    ("lookups/s, per process", "lookups_per_second", None),
    ("p50 latency, keys present (ms)", "p50_hit_ms", "{:.3f}"),
    ("p99 latency, keys present (ms)", "p99_hit_ms", "{:.3f}"),
    ("p50 latency, generated keys (ms)", "p50_generated_ms", "{:,.0f}"),
    ("p99 latency, generated keys (ms)", "p99_generated_ms", "{:,.0f}"),
    ("missing keys requested", "missing_keys_requested", "{}"),
    ("generator calls per missing key (goal 1)", "generator_calls_per_missing_key", "{:.2f}"),
    ("errors (goal 0)", "errors", "{}"),
    ("peak connections on the server", "peak_connections", "{}"),
    ("peak idle in transaction", "peak_idle_in_transaction", "{}"),
    ("cache hit rate", "cache_hit_rate", "{:.1%}"),
    ("writes committed", "writes_committed", "{}"),
    ("staleness, longest (ms)", "staleness_ms", "{:.0f}"),
]
FAILOVER_ROWS = [
    ("served again after promotion (s, goal < 5)", "resumed_after_promotion_s", "{:.2f}"),
    ("committed writes lost (goal 0)", "writes_lost", "{}"),
    ("most generator calls for one key (goal 1)", "most_calls_for_one_key", "{}"),
]


def cell(value: Any, style: str | None) -> str:
    """One value of the table."""
    if value is None:
        return "-"
    if style is None:
        return " / ".join(f"{each:,.0f}" for each in value)
    return style.format(value)


# The rows where PricingLookup's number over the baseline's says what it buys.
COMPARED = (
    "lookups_per_second_total",
    "p50_hit_ms",
    "p99_hit_ms",
    "p50_generated_ms",
    "p99_generated_ms",
    "peak_connections",
)


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """PricingLookup's number over the baseline's, for the rows where that means something."""
    lookup, baseline = results["PricingLookup"], results["baseline"]
    return {
        field: lookup[field] / baseline[field] if lookup[field] and baseline[field] else None
        for field in COMPARED
    }


def print_table(results: dict[str, dict[str, Any]]) -> None:
    """One column per scenario; beside a baseline, the ratio of the two."""
    names = list(results)
    compared = ratios(results) if "baseline" in results else None
    print(
        f"{'':<44}" + "".join(f"{name:>28}" for name in names) + ("     ratio" if compared else "")
    )
    rows = ROWS + [row for row in FAILOVER_ROWS if all(row[1] in results[n] for n in names)]
    for label, field, style in rows:
        line = f"{label:<44}" + "".join(f"{cell(results[n][field], style):>28}" for n in names)
        ratio = compared.get(field) if compared is not None else None
        if ratio is not None:
            line += (
                f"{ratio:>9.2f}x" if ratio >= 0.01 else f"{'1/' + format(1 / ratio, ',.0f'):>10}"
            )
        print(line)
    errors = {
        name: result["errors_by_kind"] for name, result in results.items() if result["errors"]
    }
    for name, kinds in errors.items():
        print(f"errors of {name}: {kinds}")


async def main(arguments: argparse.Namespace) -> None:
    """The load on a throwaway database of the server the benchmarks use."""
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    if arguments.failover:
        await main_with_failover(arguments)
        return
    with postgres_server() as server:
        async with throwaway_database(server, prefix="pricing_store_workload") as url:
            version = await migrated(url)
            results: dict[str, dict[str, Any]] = {}
            for scenario, name in ((LOOKUP, "PricingLookup"), (BASELINE, "baseline")):
                await load(url)  # each from the same start
                results[name] = await run_processes(url, arguments.seconds, scenario=scenario)

    if arguments.json:
        print(json.dumps({**results, "ratio": ratios(results)}, indent=2))
        return
    print(
        f"PostgreSQL {version}, found by {server_source()}, {os.cpu_count()} cores; "
        f"{SERVICES} services x {TASKS_PER_SERVICE} tasks, {arguments.seconds:g} s, "
        f"{BRAND_GROUPS:,} Brand×Groups ({MISSING_SHARE:.0%} missing), "
        f"writer at {WRITES_PER_SECOND}/s"
    )
    # What this machine allows: a generated key can take no less than the fake LLM itself.
    llm_ms = statistics.mean(LLM_SECONDS) * 1000
    print(f"floor for generated keys: the fake LLM's own latency, {llm_ms:,.0f} ms on average")
    print_table(results)


class Failover:
    """A primary and a synchronous standby of the workload's own, on a multi-host URL."""

    def __init__(self, directory: Path) -> None:
        directory.chmod(0o755)  # the embedded server may run as another user
        self.primary = OwnServer(directory)
        self.primary.stop()
        primary_port, standby_port = free_port(), free_port()
        self.primary.start(tcp_port=primary_port)
        self.standby: Standby | None = None
        self.standby_port = standby_port
        user = self.primary.url.username or "postgres"
        self.url = database_url(
            f"postgresql://{user}@127.0.0.1:{primary_port},127.0.0.1:{standby_port}/"
            f"{self.primary.url.database}"
        )
        self.directory = directory

    def replicate(self) -> None:
        """Start the standby from a base backup of the primary (after the data is loaded)."""
        self.standby = self.primary.standby(self.directory, tcp_port=self.standby_port)

    async def run(self, crash_at: float) -> float:
        """Crash the primary at `crash_at`, promote the standby a second later; when."""
        await asyncio.sleep(max(0.0, crash_at - time.time()))
        await asyncio.to_thread(self.primary.stop, "immediate")
        await asyncio.sleep(1.0)
        assert self.standby is not None
        await asyncio.to_thread(self.standby.promote)
        return time.time()

    async def outcome(
        self, promoted: float, services: list[dict[str, Any]], writer_report: dict[str, Any]
    ) -> dict[str, Any]:
        """How soon every service was served again; committed writes missing afterwards."""
        assert self.standby is not None
        after = await asyncpg.connect(asyncpg_dsn(self.standby.url))
        try:
            stored = {
                (int(row["brand"].split()[-1]), version_of(json.loads(row["trends"])))
                for row in await after.fetch(
                    "SELECT brand, expected_trends::text AS trends FROM public.brand_groups"
                )
            }
        finally:
            await after.close()
        latest: dict[int, int] = {}
        for number, version, _ in writer_report["commits"]:
            latest[int(number)] = max(latest.get(int(number), 0), int(version))
        return {
            "resumed_after_promotion_s": max(
                0.0, *(report["last_unavailable_at"] - promoted for report in services)
            ),
            "writes_lost": sum(
                (number, version) not in stored for number, version in latest.items()
            ),
        }

    def close(self) -> None:
        """Stop both servers; their data goes with the directory."""
        if self.standby is not None:
            self.standby.close()
        self.primary.close()


async def main_with_failover(arguments: argparse.Namespace) -> None:
    """The PricingLookup load through a crash of the primary and a promotion."""
    with tempfile.TemporaryDirectory(prefix="pricing-store-failover-") as directory:
        failover = Failover(Path(directory))
        try:
            version = await migrated(failover.url)
            await load(failover.url)
            await asyncio.to_thread(failover.replicate)
            await synchronous(failover.url)
            result = await run_processes(failover.url, arguments.seconds, failover)
        finally:
            failover.close()
    if arguments.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"PostgreSQL {version}, a primary and a synchronous standby of its own, "
        f"{os.cpu_count()} cores; {SERVICES} services x {TASKS_PER_SERVICE} tasks, "
        f"{arguments.seconds:g} s; primary crashed at a third, standby promoted 1 s later"
    )
    print("what this machine allows: resumption is bounded below by the promotion itself")
    print_table({"PricingLookup through a failover": result})


async def synchronous(url: URL) -> None:
    """Make the primary's commits wait for the standby, and wait until it streams."""
    admin = await asyncpg.connect(driver_settings(url).dsn())
    try:
        await admin.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        await admin.execute("SELECT pg_reload_conf()")
        for _ in range(100):
            if await admin.fetchval("SELECT sync_state FROM pg_stat_replication") == "sync":
                return
            await asyncio.sleep(0.1)
        raise SystemExit("the standby did not become synchronous")
    finally:
        await admin.close()


def child(role: str, arguments: list[str]) -> None:
    """Run one service or the writer, writing its report as JSON to the last argument."""
    url, scenario, start_at, seconds, index, output = arguments
    if role == "service":
        report = asyncio.run(service(url, scenario, float(start_at), float(seconds), int(index)))
    else:
        report = asyncio.run(writer(url, float(start_at), float(seconds)))
    Path(output).write_text(json.dumps(report))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("service", "writer"):
        child(sys.argv[1], sys.argv[2:])
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
        parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
        parser.add_argument("--seconds", type=float, default=SECONDS, help="steady load, seconds")
        parser.add_argument(
            "--failover", action="store_true", help="crash the primary a third of the way in"
        )
        asyncio.run(main(parser.parse_args()))
