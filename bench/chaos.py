"""`make chaos`: the package under a seeded schedule of faults on a pg_auto_failover formation.

Starts a formation of its own (monitor and two synchronous nodes, see tests/formation.py)
and, on the URL `pg_autoctl show uri` prints, five processes: three services whose
`PricingLookup`s read and generate (`service-0` on the primary; `service-1` through TCP
proxies of the run's own, which a fault makes go silent; `service-2` reading the secondary
with `listen_to` on the primary), a writer whose acknowledged writes raise each key's
version, and an operator running `bulk_upsert`s. Faults come from a schedule drawn from
the seed: the same seed injects the same faults at the same offsets. Every operation is
recorded with its start, end, outcome and value (JSON lines); once the schedule and a
quiet period are over, each service dumps what its lookup serves and closes it, and the
history is checked (bench/history.py). Exits non-zero on any violation, naming the seed
and the first offending records.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
from sqlalchemy import text

from bench.bench import migrated
from bench.history import RULES, SETTLING, TOPOLOGY, Verdict, check
from bench.workload import version_of
from pricing_store import (
    BrandGroupRepository,
    PricingLookup,
    PricingStoreError,
    create_engine,
    create_session_factory,
)
from pricing_store.db import database_url
from tests.formation import Formation, FormationUnavailableError
from tests.provision import SilentProxy

READ_KEYS = 100  # the writer's keys, which the services read
# Keys missing at the start, which the services generate: at any moment they ask for a
# few fresh ones, a window that moves on by NEW_KEYS_PER_SECOND, so that generations (and
# their leases) run throughout, under every fault.
NEW_KEYS_PER_SECOND = 2
FRESH_KEYS = 6
COLD_KEYS = 10_000  # nobody reads them; the operator's bursts write them all
TASKS = 8  # per service
LISTEN_TIMEOUT = 1.0
GENERATION_TIMEOUT = 2.0
LEASE_SECONDS = 3.0
CLOSE_TIMEOUT = 2.0
# After the schedule and the last fault, the load goes on this long (the recovery is
# measured), then stops; QUIET seconds later, the caches are dumped.
RECOVERY = 8.0
QUIET = 3.0
CANCELLED_SHARE = 0.03  # calls a service cancels itself, after a random few milliseconds
SERVICES = ("service-0", "service-1", "service-2")
# What a fault kind does, and how long it lasts where it is held (seconds).
FAULTS = {
    "primary killed": 0.0,  # SIGKILL of its keeper and PostgreSQL; automatic failover
    "controlled failover": 0.0,  # pg_autoctl perform failover
    "listener terminated": 0.0,  # pg_terminate_backend of one service's LISTEN backend
    "listener blackholed": 3.0,  # service-1's proxies forward nothing
    "replay paused": 3.0,  # on the secondary
    "burst of changes": 0.0,  # 10,000 keys nobody reads, in one bulk_upsert
    "service frozen": LEASE_SECONDS + 2.0,  # SIGSTOP past the lease time, then SIGCONT
    "generator fails": 3.0,
    "generator hangs": 3.0,  # past the generation timeout
}


def read_key(n: int) -> str:
    """The brand of a key the writer writes and the services read."""
    return f"Read {n}"


def generated_key(n: int) -> str:
    """The brand of a key missing at the start, generated on demand."""
    return f"Generated {n}"


def schedule(seed: int, seconds: float) -> list[tuple[float, str]]:
    """The faults and their offsets (seconds from the start), drawn from `seed` alone."""
    chosen = random.Random(seed)
    offset, planned = 2.0, []
    while offset < seconds:
        planned.append((round(offset, 2), chosen.choice(list(FAULTS))))
        offset += chosen.uniform(3.0, 8.0)
    return planned


class Recorder:
    """Appends one JSON object a line to the process's own history file."""

    def __init__(self, path: Path, proc: str, *, standby: bool = False) -> None:
        self._file = path.open("a", buffering=1)
        self.proc = proc
        self.standby = standby  # its reads come from a standby: bounded by its lag

    def __call__(self, **record: Any) -> None:
        """Record one line."""
        self._file.write(json.dumps({"proc": self.proc, **record}) + "\n")

    async def timed(
        self,
        op: str,
        key: str,
        call: Awaitable[Any],
        value: Callable[[Any], Any],
        *,
        cancelled_by_us: bool = False,
    ) -> None:
        """Run the call, recording its outcome; our own `wait_for` running out is "cancelled"."""
        start = time.time()
        try:
            result = await call
        except Exception as error:
            ours = isinstance(error, TimeoutError) and not isinstance(error, PricingStoreError)
            if ours and cancelled_by_us:  # the caller's own wait_for ran out
                self(op=op, key=key, start=start, end=time.time(), outcome="cancelled")
                return
            self(
                op=op,
                key=key,
                start=start,
                end=time.time(),
                outcome="error",
                error=type(error).__name__,
                package=isinstance(error, PricingStoreError),
                message=str(error)[:200],
            )
            return
        standby = {"standby": True} if self.standby and op == "read" else {}
        self(
            op=op,
            key=key,
            start=start,
            end=time.time(),
            outcome="ok",
            version=value(result),
            **standby,
        )


class GeneratorFailureError(Exception):
    """What the chaos LLM raises while it is made to fail."""


class ChaosLLM:
    """Generates the same row for a key in any process; fails or hangs when told to."""

    def __init__(self, control: Path, record: Recorder) -> None:
        self._control = control
        self._record = record

    async def brand_group(self, brand: str, group: str) -> dict[str, object]:
        """A row after 0.2-0.5 s; or a failure, or a hang past the generation timeout."""
        start, mode = time.time(), self._mode()
        try:
            if mode == "hangs":
                await asyncio.sleep(GENERATION_TIMEOUT * 3)
            await asyncio.sleep(random.uniform(0.2, 0.5))
            if mode == "fails":
                raise GeneratorFailureError("the LLM is down")
        except BaseException:
            self._record(op="llm", key=brand, start=start, end=time.time(), outcome="error")
            raise
        self._record(op="llm", key=brand, start=start, end=time.time(), outcome="ok")
        return {"base_price": "19.99", "expected_trends": ["generated"]}

    async def model(self, brand: str, group: str, model: str) -> dict[str, object]:
        """Never called: the run generates Brand×Groups."""
        raise AssertionError("no model is asked for")

    def _mode(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self._control.read_text()
        return ""


def fresh_key(start_at: float, chooser: random.Random) -> int:
    """The number of a key to generate: one of the few that are fresh now."""
    elapsed = max(0.0, time.time() - start_at)
    return int(elapsed * NEW_KEYS_PER_SECOND) + chooser.randrange(FRESH_KEYS)


def signature(reference: Any) -> int | None:
    """What a dump and the primary's rows are compared by: the row's version, or None."""
    return None if reference is None else version_of(reference.expected_trends)


async def service(run: dict[str, Any], name: str) -> None:
    """One service: TASKS tasks reading and generating until the end, then a dump and close."""
    directory = Path(run["directory"])
    index = SERVICES.index(name)
    record = Recorder(directory / f"{name}.jsonl", name, standby=index == 2)
    url = run["service_urls"][index]
    engine = create_engine(url, connect_args={"timeout": 3, "command_timeout": 5})
    # Named like its reads, so that faults and the check after close() find all of it.
    listen_to = create_engine(f"{run['url']}&application_name={name}") if index == 2 else None
    lookup = PricingLookup(
        engine,
        cache_size=1_000,
        listen_to=listen_to,
        listen_timeout=LISTEN_TIMEOUT,
        generator=ChaosLLM(directory / "generator", record),
        generation_timeout=GENERATION_TIMEOUT,
        lease_seconds=LEASE_SECONDS,
        close_timeout=CLOSE_TIMEOUT,
    )
    chooser = random.Random(f"{run['seed']}-{name}")
    await asyncio.sleep(max(0.0, run["start_at"] - time.time()))

    async def worker() -> None:
        while not stopped(directory):
            if chooser.random() < 0.75:
                key = read_key(chooser.randrange(READ_KEYS))
                op, call = "read", lookup.get(key, "jeans")
            else:
                key = generated_key(fresh_key(run["start_at"], chooser))
                op, call = "generate", lookup.get_or_generate(key, "jeans")
            cancelled = chooser.random() < CANCELLED_SHARE
            if cancelled:
                call = asyncio.wait_for(call, chooser.uniform(0.0005, 0.02))
            await record.timed(op, key, call, signature, cancelled_by_us=cancelled)
            await asyncio.sleep(0.005)

    async def sampler() -> None:
        """Whether the cache is in use, every 0.1 s: when caches cache again after a fault."""
        while not stopped(directory):
            record(op="listening", start=time.time(), value=lookup.stats().listening)
            await asyncio.sleep(0.1)

    with contextlib.suppress(PricingStoreError):  # a first start during a fault
        await lookup.start()
    await asyncio.gather(sampler(), *(worker() for _ in range(TASKS)))
    await asyncio.to_thread(wait_for_file, directory / "quiet")
    keys = [(read_key(n), "jeans") for n in range(READ_KEYS)]
    asked = int((time.time() - run["start_at"]) * NEW_KEYS_PER_SECOND) + FRESH_KEYS
    keys += [(generated_key(n), "jeans") for n in range(asked)]
    entries = lookup.stats().entries
    served = await lookup.get_many(keys)
    record(
        op="dump",
        start=time.time(),
        entries=entries,
        listening=lookup.stats().listening,
        values={brand: signature(reference) for (brand, _), reference in served.items()},
    )
    started = time.time()
    await lookup.close()
    closed_in = time.time() - started
    await engine.dispose()
    if listen_to is not None:
        await listen_to.dispose()
    record(
        op="closed",
        start=time.time(),
        seconds=closed_in,
        connections_left=await connections_named(run["node_urls"], name),
    )


def stopped(directory: Path) -> bool:
    """Whether the orchestrator has told the load to stop."""
    return (directory / "stop").exists()


def wait_for_file(path: Path) -> None:
    """Until the file exists (the orchestrator's signal to the processes)."""
    while not path.exists():
        time.sleep(0.1)


async def connections_named(node_urls: list[str], name: str) -> int:
    """Connections with this application_name on any node, once their backends have gone.

    A backend leaves when it reads its client's goodbye: within a second of `close()`.
    """
    left = 0
    deadline = time.time() + 1.0
    for url in node_urls:
        connection = await asyncpg.connect(url)
        try:
            while True:
                left_here = await connection.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name
                )
                if not left_here or time.time() > deadline:
                    break
                await asyncio.sleep(0.05)
            left += left_here
        finally:
            await connection.close()
    return int(left)


async def writer(run: dict[str, Any]) -> None:
    """Upserts of the read keys, each a new version, acknowledged once committed."""
    directory = Path(run["directory"])
    record = Recorder(directory / "writer.jsonl", "writer")
    engine = create_engine(run["url"], connect_args={"timeout": 3, "command_timeout": 5})
    sessions = create_session_factory(engine)
    chooser = random.Random(f"{run['seed']}-writer")
    await asyncio.sleep(max(0.0, run["start_at"] - time.time()))
    version = 0
    while not stopped(directory):
        version += 1
        key = read_key(chooser.randrange(READ_KEYS))

        async def write(key: str = key, version: int = version) -> int:
            async with sessions.begin() as session:
                await BrandGroupRepository(session).upsert(
                    {
                        "brand": key,
                        "group_name": "jeans",
                        "base_price": 25,
                        "expected_trends": [f"v{version}"],
                    }
                )
            return version

        await record.timed("write", key, write(), lambda written: written)
        await asyncio.sleep(0.05)
    await engine.dispose()


async def operator(run: dict[str, Any]) -> None:
    """Small bulk loads of cold keys every few seconds; 10,000 keys when a burst is asked."""
    directory = Path(run["directory"])
    record = Recorder(directory / "operator.jsonl", "operator")
    engine = create_engine(run["url"], connect_args={"timeout": 3, "command_timeout": 30})
    sessions = create_session_factory(engine)
    burst = directory / "burst"
    await asyncio.sleep(max(0.0, run["start_at"] - time.time()))
    round_ = 0
    while not stopped(directory):
        round_ += 1
        size = COLD_KEYS if burst.exists() else 200
        burst.unlink(missing_ok=True)

        async def load(size: int = size, round_: int = round_) -> int:
            async with sessions.begin() as session:
                await BrandGroupRepository(session).bulk_upsert(
                    {"brand": f"Cold {n}", "group_name": "jeans", "base_price": 5 + round_ % 400}
                    for n in range(size)
                )
            return size

        await record.timed("bulk", f"{size} cold keys", load(), lambda size: size)
        await asyncio.sleep(1.0)
    await engine.dispose()


class Run:
    """The formation, the proxies, the processes and the faults of one run."""

    def __init__(self, seed: int, seconds: float, directory: Path) -> None:
        self.seed, self.seconds, self.directory = seed, seconds, directory
        self.formation = Formation(directory / "formation")
        try:
            self.url = self.formation.uri()
            self.proxies = [SilentProxy("127.0.0.1", node.port) for node in self.formation.nodes]
        except BaseException:
            self.formation.close()
            raise
        self.record = Recorder(directory / "faults.jsonl", "chaos")
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.failovers: list[dict[str, Any]] = []
        self._topology = asyncio.Lock()
        self.keep: Path | None = None  # where to write the whole history, if anywhere

    def node_url(self, port: int) -> str:
        """A node's own URL (not the formation's), as the superuser."""
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"

    async def __call__(self) -> tuple[Verdict, dict[str, Any]]:
        """Run the schedule; the verdict on the history, and the table's numbers."""
        async with contextlib.AsyncExitStack() as stack:
            for proxy in self.proxies:
                await stack.enter_async_context(proxy)
            hosts = ",".join(f"127.0.0.1:{proxy.port}" for proxy in self.proxies)
            nodes = ",".join(f"127.0.0.1:{node.port}" for node in self.formation.nodes)
            through_proxies = self.url.replace(nodes, hosts, 1)
            on_secondary = self.url.replace("read-write", "prefer-standby")
            await migrated(database_url(self.url))
            await self.load()
            start_at = time.time() + 4.0  # every process connected and ready by then
            run = {
                "seed": self.seed,
                "directory": str(self.directory),
                "url": self.url,
                "service_urls": [
                    f"{url}&application_name={name}"
                    for url, name in zip(
                        (self.url, through_proxies, on_secondary), SERVICES, strict=True
                    )
                ],
                "node_urls": [self.node_url(node.port) for node in self.formation.nodes],
                "start_at": start_at,
            }
            for role in (*SERVICES, "writer", "operator"):
                self.processes[role] = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, role, json.dumps(run)
                )
            await asyncio.sleep(max(0.0, start_at - time.time()))
            faults = [
                asyncio.create_task(self.inject(start_at, offset, kind))
                for offset, kind in schedule(self.seed, self.seconds)
            ]
            await asyncio.gather(*faults)
            await asyncio.sleep(max(0.0, start_at + self.seconds - time.time()) + RECOVERY)
            (self.directory / "stop").touch()
            await asyncio.sleep(QUIET)
            (self.directory / "quiet").touch()
            try:  # each dumps, closes (close_timeout + 1 s at most) and checks: seconds
                async with asyncio.timeout(60):
                    codes = await asyncio.gather(*(p.wait() for p in self.processes.values()))
            except TimeoutError:
                hung = [name for name, p in self.processes.items() if p.returncode is None]
                raise SystemExit(f"chaos processes did not finish: {hung}") from None
            if any(codes):
                raise SystemExit(f"a chaos process failed: exit codes {codes}")
            stored = await self.stored()
        history = [
            json.loads(line)
            for path in sorted(self.directory.glob("*.jsonl"))
            for line in path.read_text().splitlines()
        ]
        if self.keep is not None:
            self.keep.write_text("".join(json.dumps(r) + "\n" for r in history))
        verdict = check(history, stored, listen_timeout=LISTEN_TIMEOUT, close_timeout=CLOSE_TIMEOUT)
        return verdict, summary(history, self.failovers)

    async def load(self) -> None:
        """The read keys at version 0 and the cold keys; the generated ones missing."""
        engine = create_engine(self.url)
        async with create_session_factory(engine).begin() as session:
            await BrandGroupRepository(session).bulk_upsert(
                [
                    {"brand": read_key(n), "group_name": "jeans", "base_price": 25}
                    for n in range(READ_KEYS)
                ]
                + [
                    {"brand": f"Cold {n}", "group_name": "jeans", "base_price": 5}
                    for n in range(COLD_KEYS)
                ]
            )
        await engine.dispose()

    async def stored(self) -> dict[str, int | None]:
        """The primary's rows after the run, as a dump holds them."""
        engine = create_engine(self.url)
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT brand, expected_trends FROM public.brand_groups "
                    "WHERE brand NOT LIKE 'Cold %'"
                )
            )
            stored: dict[str, int | None] = {brand: version_of(trends) for brand, trends in rows}
        await engine.dispose()
        return stored

    async def inject(self, start_at: float, offset: float, kind: str) -> None:
        """One fault at its offset; topology changes wait for the previous one to settle."""
        await asyncio.sleep(max(0.0, start_at + offset - time.time()))
        chooser = random.Random(f"{self.seed}-{offset}")  # the seed's, not the clock's
        if kind in TOPOLOGY:
            async with self._topology:
                await self._inject(kind, chooser)
        else:
            await self._inject(kind, chooser)

    async def _inject(self, kind: str, chooser: random.Random) -> None:
        start, target, held = time.time(), None, FAULTS[kind]
        formation = self.formation
        if kind == "primary killed":
            primary = await asyncio.to_thread(formation.role_of, "primary")
            await asyncio.to_thread(formation.kill, primary)
            others = {
                n.name: ("wait_primary", "primary") for n in formation.nodes if n is not primary
            }
            await asyncio.to_thread(formation.wait_for, others, 120)
            promoted = time.time()
            formation.start(primary)
            await asyncio.to_thread(formation.wait_until_stable, 120)
            self.failovers.append({"start": start, "promoted": promoted, "end": time.time()})
        elif kind == "controlled failover":
            await asyncio.to_thread(formation.perform_failover)
            promoted = time.time()
            await asyncio.to_thread(formation.wait_until_stable, 120)
            self.failovers.append({"start": start, "promoted": promoted, "end": time.time()})
        elif kind == "listener terminated":
            target = chooser.choice(SERVICES)
            terminated = await self.on_primary(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1 AND (query LIKE 'LISTEN %' "
                "OR query IN ('SELECT 1', 'SELECT pg_current_wal_lsn()'))",
                target,
            )
            if not terminated:  # no primary now, or no listener to cut: no fault
                return
        elif kind == "listener blackholed":
            target = "service-1"
            for proxy in self.proxies:
                proxy.pause()
            await asyncio.sleep(held)
            for proxy in self.proxies:
                proxy.resume()
        elif kind == "replay paused":
            target = "service-2"  # the one process that reads the secondary
            if not await self.replay_paused(held):  # no secondary now: no fault
                return
        elif kind == "burst of changes":
            burst = self.directory / "burst"
            burst.touch()
            for _ in range(100):  # the operator takes it up within a second or so
                if not burst.exists():
                    break
                await asyncio.sleep(0.1)
            else:
                return  # not taken up (the operator is stuck in an outage): no fault
            start = time.time()
        elif kind == "service frozen":
            target = "service-0"
            process = self.processes[target]
            process.send_signal(signal.SIGSTOP)
            await asyncio.sleep(held)
            process.send_signal(signal.SIGCONT)
        else:  # the generator fails or hangs
            control = self.directory / "generator"
            control.write_text(kind.split()[-1])
            await asyncio.sleep(held)
            control.write_text("")
        self.record(op="fault", kind=kind, start=start, end=time.time(), target_proc=target)

    async def replay_paused(self, seconds: float) -> bool:
        """Pause the secondary's replay for `seconds`; False if there was none to pause."""
        try:
            secondary = await asyncio.to_thread(self.formation.role_of, "secondary")
            connection = await asyncpg.connect(self.node_url(secondary.port), timeout=3)
        except (RuntimeError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False  # none while a node rejoins
        try:
            await connection.execute("SELECT pg_wal_replay_pause()")
        except asyncpg.PostgresError:  # promoted meanwhile
            await connection.close()
            return False
        try:
            await asyncio.sleep(seconds)
            with contextlib.suppress(asyncpg.PostgresError):  # promoted: replays no more
                await connection.execute("SELECT pg_wal_replay_resume()")
        finally:
            await connection.close()
        return True

    async def on_primary(self, sql: str, *arguments: Any) -> int:
        """One query on whichever node is primary now: its value; 0 if none could be had."""
        try:
            connection = await asyncpg.connect(self.url, timeout=3)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return 0
        try:
            return int(await connection.fetchval(sql, *arguments) or 0)
        finally:
            await connection.close()

    def close(self) -> None:
        """Stop every process of the run."""
        for process in self.processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
                    process.kill()
        self.formation.close()


def summary(history: list[dict[str, Any]], failovers: list[dict[str, Any]]) -> dict[str, Any]:
    """The table's numbers: faults, operations, each failover's outage, latencies."""
    faults = [r for r in history if r.get("op") == "fault"]
    calls = [r for r in history if r.get("op") in ("read", "generate", "write", "bulk")]
    for failover in failovers:
        kind = next(f["kind"] for f in faults if f["start"] == failover["start"])
        window = (failover["start"], failover["end"] + SETTLING)
        served = {
            proc: longest_gap(
                [r["end"] for r in calls if r["proc"] == proc and r["outcome"] == "ok"], window
            )
            for proc in SERVICES
        }
        caching_again = {proc: cached_again(history, proc, window) for proc in SERVICES}
        back = list(caching_again.values())
        failover.update(
            kind=kind,
            promoted_s=failover["promoted"] - failover["start"],
            writes_paused_s=longest_gap(
                [r["end"] for r in calls if r["op"] == "write" and r["outcome"] == "ok"], window
            ),
            served_again_s=max(served.values()),
            caching_again_s=None if None in back else max(b for b in back if b is not None),
            slowest_to_cache=max(caching_again, key=lambda proc: caching_again[proc] or 1e9),
        )

    def p99(during: bool) -> float | None:
        took = sorted(
            r["end"] - r["start"]
            for r in calls
            if r["op"] == "read"
            and r["outcome"] == "ok"
            and any(f["start"] <= r["end"] and r["start"] <= f["end"] for f in faults) == during
        )
        return took[int(0.99 * (len(took) - 1))] * 1000 if took else None

    return {
        "faults": dict(Counter(f["kind"] for f in faults)),
        "operations": dict(Counter(f"{r['op']} {r['outcome']}" for r in calls)),
        "errors": dict(Counter(r["error"] for r in calls if r["outcome"] == "error")),
        "failovers": failovers,
        "p99_read_ms_during_faults": p99(True),
        "p99_read_ms_outside_faults": p99(False),
    }


def cached_again(
    history: list[dict[str, Any]], proc: str, window: tuple[float, float]
) -> float | None:
    """Seconds from the window's start until the process's cache was in use again.

    0 if it was not lost in the window, None if it never came back (sampled every 0.1 s
    while the load runs).
    """
    samples = sorted(
        (r["start"], r["value"])
        for r in history
        if r.get("op") == "listening" and r["proc"] == proc and r["start"] >= window[0]
    )
    lost = next((at for at, up in samples if not up and at <= window[1]), None)
    if lost is None:
        return 0.0
    back = next((at for at, up in samples if up and at > lost), None)
    return None if back is None else float(back - window[0])


def seconds_or_never(seconds: float | None) -> str:
    """A measured time for the table; "never" when it never happened."""
    return " never" if seconds is None else f"{seconds:>6.1f}"


def longest_gap(times: list[float], window: tuple[float, float]) -> float:
    """The longest time in `window` with none of `times`: how long something was down."""
    inside = sorted(t for t in times if window[0] <= t <= window[1])
    points = [window[0], *inside, window[1]]
    return max(later - earlier for earlier, later in itertools.pairwise(points))


def print_report(seed: int, seconds: float, verdict: Verdict, numbers: dict[str, Any]) -> None:
    """The table, then the first offending records of each broken rule."""
    print(
        f"make chaos seed={seed} seconds={seconds:g}: pg_auto_failover formation, "
        f"{len(SERVICES)} services, a writer, an operator; {os.cpu_count()} cores"
    )
    print("faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(numbers["faults"].items())))
    print("operations: " + ", ".join(f"{k} {v}" for k, v in sorted(numbers["operations"].items())))
    print(
        "errors reaching callers: "
        + ", ".join(f"{k} {v}" for k, v in sorted(numbers["errors"].items()))
    )
    for rule in RULES:
        print(f"  {rule:<32} {len(verdict.violations[rule]):>6} violations")
    print(
        f"  {'generator calls repeated under a fault (counted apart)':<32} "
        f"{verdict.excused_generations}"
    )
    print("per failover (seconds from its start): promoted, writes paused, every service")
    print("served again, every cache caching again")
    for failover in numbers["failovers"]:
        print(
            f"  {failover['kind']:<20} {failover['promoted_s']:>6.1f} "
            f"{failover['writes_paused_s']:>6.1f} {failover['served_again_s']:>6.1f} "
            f"{seconds_or_never(failover['caching_again_s'])} ({failover['slowest_to_cache']})"
        )
    for label in ("during", "outside"):
        value = numbers[f"p99_read_ms_{label}_faults"]
        print(f"p99 read latency {label} faults: " + ("-" if value is None else f"{value:.1f} ms"))
    for rule, records in verdict.violations.items():
        for offending in records[:3]:
            print(f"VIOLATION {rule} (seed {seed}): {json.dumps(offending)[:400]}")


async def main(arguments: argparse.Namespace) -> int:
    """Run the schedule; 0 if no rule was broken."""
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    # The formation's URL names no user, as `pg_autoctl show uri` prints it: libpq's and
    # asyncpg's default user is PGUSER, and the formation's superuser is postgres.
    os.environ["PGUSER"] = "postgres"
    try:
        with tempfile.TemporaryDirectory(prefix="pricing-store-chaos-") as directory:
            os.chmod(directory, 0o755)  # the formation runs as another user when we are root
            run = Run(arguments.seed, arguments.seconds, Path(directory))
            run.keep = arguments.history
            try:
                verdict, numbers = await run()
            finally:
                run.close()
    except FormationUnavailableError as error:
        if os.environ.get("CI") == "true":
            raise
        print(f"make chaos skipped: {error}")
        return 0
    if arguments.json:
        print(
            json.dumps(
                {"violations": {k: len(v) for k, v in verdict.violations.items()}, **numbers},
                indent=2,
            )
        )
    else:
        print_report(arguments.seed, arguments.seconds, verdict, numbers)
    return 0 if verdict.ok else 1


def child(role: str, run: dict[str, Any]) -> None:
    """Run one service, the writer or the operator."""
    if role in SERVICES:
        asyncio.run(service(run, role))
    else:
        asyncio.run(writer(run) if role == "writer" else operator(run))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] in (*SERVICES, "writer", "operator"):
        child(sys.argv[1], json.loads(sys.argv[2]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
        parser.add_argument("--seed", type=int, default=1, help="the schedule's seed")
        parser.add_argument("--seconds", type=float, default=120.0, help="the schedule's length")
        parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
        parser.add_argument(
            "--history", type=Path, help="write every record of the run there (JSON lines)"
        )
        sys.exit(asyncio.run(main(parser.parse_args())))
