"""The checks `make chaos` runs on a recorded history, after the run; no I/O.

A history is what every process wrote, one JSON object a line, with wall-clock times
(`time.time()`, one machine): operations (`op`: "read", "generate", "write", "bulk",
"llm"), with `proc`, `key`, `start`, `end`, `outcome` ("ok", "error", "cancelled"),
`version` (of the value read or written) and, for errors, `error` and `package` (whether
it was one of the package's own); each service's cache dumped after the quiet period
("dump"), and what its `close()` left ("closed"); and the faults, with their windows
("fault"). `check` returns the violations of each rule, each naming the records at fault.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# A change committed on the primary is heard by every listening process within this.
HEARD_WITHIN = 0.5
# After a fault ends, errors and repeated generator calls are still its doing this long:
# a waiter's patience (generation_timeout + lease time) and a reconnect's back-off.
SETTLING = 7.0

# Faults that move the primary: they reach every process's connections.
TOPOLOGY = ("primary killed", "controlled failover")

Record = dict[str, Any]


@dataclass
class Verdict:
    """The violations found, per rule (an empty list: none)."""

    violations: dict[str, list[Record]] = field(default_factory=dict)
    excused_generations: int = 0

    @property
    def ok(self) -> bool:
        """Whether no rule was broken."""
        return not any(self.violations.values())


RULES = (
    "acknowledged write lost",
    "stale read",
    "cache diverged",
    "generated twice",
    "error outside a fault",
    "foreign error",
    "connection left after close",
    "close past its bound",
    "cache not caching at the end",
)


def check(
    records: Iterable[Record],
    stored: Mapping[str, Any],
    *,
    listen_timeout: float,
    close_timeout: float = 2.0,
) -> Verdict:
    """Every rule over the history; `stored` is the primary's rows after the run, by key.

    Each stored value is what a dump holds for the key: its version for the writer's keys,
    or the generated row's signature. A close must return within `close_timeout` + 1 s.
    """
    history = list(records)
    faults = [r for r in history if r.get("op") == "fault"]
    verdict = Verdict({rule: [] for rule in RULES})
    found = verdict.violations
    found["acknowledged write lost"] = lost_writes(history, stored)
    found["stale read"] = stale_reads(history, faults, listen_timeout)
    found["cache diverged"] = diverged(history, stored)
    found["generated twice"], verdict.excused_generations = generated_twice(history, faults)
    outside, foreign = bad_errors(history, faults, listen_timeout)
    found["error outside a fault"], found["foreign error"] = outside, foreign
    closes = [r for r in history if r.get("op") == "closed"]
    found["connection left after close"] = [r for r in closes if r["connections_left"]]
    found["close past its bound"] = [r for r in closes if r["seconds"] > close_timeout + 1.0]
    found["cache not caching at the end"] = [
        r for r in history if r.get("op") == "dump" and not r["listening"]
    ]
    return verdict


def lost_writes(history: list[Record], stored: Mapping[str, Any]) -> list[Record]:
    """Acknowledged writes whose version the primary no longer has (nor a later one)."""
    latest: dict[str, Record] = {}
    for record in history:
        if record.get("op") == "write" and record["outcome"] == "ok":
            held = latest.get(record["key"])
            if held is None or record["version"] > held["version"]:
                latest[record["key"]] = record
    return [
        r
        for key, r in latest.items()
        if not isinstance(stored.get(key), int) or stored[key] < r["version"]
    ]


def stale_reads(history: list[Record], faults: list[Record], listen_timeout: float) -> list[Record]:
    """Reads on the primary path older than a write acknowledged HEARD_WITHIN before them.

    Such a read returned a version older than one acknowledged more than HEARD_WITHIN
    before it began, with no fault in between to excuse it.
    A fault excuses staleness while it lasts and for `listen_timeout` + HEARD_WITHIN after
    (a silent listener is given up within `listen_timeout`), for the process it was aimed
    at. Reads from a standby are left to the convergence check: their bound is the
    standby's lag.
    """
    acknowledged: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for record in history:
        if record.get("op") == "write" and record["outcome"] == "ok":
            acknowledged[record["key"]].append((record["end"], record["version"]))
    stale = []
    for record in history:
        if record.get("op") != "read" or record["outcome"] != "ok" or record.get("standby"):
            continue
        # A fault on its process (or a failover) under way when the read began, or ended
        # just before, excuses it.
        recent = (record["start"] - listen_timeout - HEARD_WITHIN, record["start"])
        if _faulted(faults, recent, 0.0, record["proc"], topology_only=True):
            continue
        for acked_at, version in acknowledged.get(record["key"], ()):
            if version > record["version"] and acked_at < record["start"] - HEARD_WITHIN:
                stale.append(record)
                break
    return stale


def diverged(history: list[Record], stored: Mapping[str, Any]) -> list[Record]:
    """Dumped cache entries that differ from the primary's rows (one record per entry)."""
    wrong = []
    for record in history:
        if record.get("op") != "dump":
            continue
        for key, value in record["values"].items():
            if value != stored.get(key):
                wrong.append(
                    {
                        **record,
                        "values": None,
                        "key": key,
                        "cached": value,
                        "stored": stored.get(key),
                    }
                )
    return wrong


def generated_twice(history: list[Record], faults: list[Record]) -> tuple[list[Record], int]:
    """Successful generator calls past the first per key, unless a fault excuses them.

    A holder frozen past its lease or cut off from the database, or one whose store a
    failover cut, lets another process generate again: a call after one overlapped by such
    a fault (aimed at the first call's process, or a failover) is counted apart (the second
    value); any other is a violation.
    """
    calls: dict[str, list[Record]] = defaultdict(list)
    for record in history:
        if record.get("op") == "llm" and record["outcome"] == "ok":
            calls[record["key"]].append(record)
    twice, excused = [], 0
    for made in calls.values():
        made.sort(key=lambda r: r["start"])
        for first, again in itertools.pairwise(made):
            # The first call's row may not have been stored: its process was frozen past
            # its lease or cut off, or a failover cut its store, while it ran or just after.
            window = (first["start"], first["end"] + SETTLING)  # the call, then its store
            if _faulted(faults, window, 0.0, first["proc"], topology_only=True):
                excused += 1
            else:
                twice.append(again)
    return twice, excused


def bad_errors(
    history: list[Record], faults: list[Record], listen_timeout: float
) -> tuple[list[Record], list[Record]]:
    """Errors that reached a caller outside any fault; errors not of the package's own.

    The generator's own error is its caller's to see, while the generator is made to fail.
    """
    outside, foreign = [], []
    for record in history:
        if record.get("op") not in ("read", "generate", "write", "bulk"):
            continue
        if record["outcome"] != "error":
            continue
        if not _faulted(faults, (record["start"], record["end"]), SETTLING, record["proc"]):
            outside.append(record)
        generator_failing = record["error"] == "GeneratorFailureError" and _faulted(
            [f for f in faults if f["kind"] == "generator fails"],
            (record["start"], record["end"]),
            SETTLING,
            None,
        )
        if not record["package"] and not generator_failing:
            foreign.append(record)
    return outside, foreign


def _faulted(
    faults: list[Record],
    window: tuple[float, float],
    after: float,
    proc: str | None,
    *,
    topology_only: bool = False,
) -> bool:
    """Whether a fault was under way in `window`, or had ended less than `after` before it.

    A fault aimed at one process counts for that process alone, unless `proc` is None
    (any process's). With `topology_only`, a fault aimed at no process counts only if it
    moved the primary (a generator failing or a burst excuses no stale read).
    """
    start, end = window
    for fault in faults:
        aimed = fault.get("target_proc")
        if aimed is not None and proc is not None and aimed != proc:
            continue
        if aimed is None and topology_only and fault["kind"] not in TOPOLOGY:
            continue
        if fault["start"] <= end and start <= fault["end"] + after:
            return True
    return False
