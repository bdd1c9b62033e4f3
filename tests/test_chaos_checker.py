"""`make chaos`'s checker catches what it is for: histories with a known fault in each."""

from __future__ import annotations

from typing import Any

from bench.history import HEARD_WITHIN, SETTLING, check

LISTEN_TIMEOUT = 1.0


def write(key: str, version: int, start: float, end: float, outcome: str = "ok") -> dict[str, Any]:
    failed = {"error": "DatabaseUnavailableError", "package": True} if outcome == "error" else {}
    return {
        "proc": "writer",
        "op": "write",
        "key": key,
        "version": version,
        "start": start,
        "end": end,
        "outcome": outcome,
        **failed,
    }


def read(
    key: str, version: int, start: float, proc: str = "service-0", **more: Any
) -> dict[str, Any]:
    return {
        "proc": proc,
        "op": "read",
        "key": key,
        "version": version,
        "start": start,
        "end": start + 0.001,
        "outcome": "ok",
        **more,
    }


def fault(kind: str, start: float, end: float, target: str | None = None) -> dict[str, Any]:
    return {
        "proc": "chaos",
        "op": "fault",
        "kind": kind,
        "start": start,
        "end": end,
        "target_proc": target,
    }


def dump(values: dict[str, int | None], proc: str = "service-0") -> dict[str, Any]:
    return {"proc": proc, "op": "dump", "start": 100.0, "values": values, "listening": True}


def llm(key: str, start: float, proc: str) -> dict[str, Any]:
    return {
        "proc": proc,
        "op": "llm",
        "key": key,
        "start": start,
        "end": start + 0.3,
        "outcome": "ok",
    }


def error(
    start: float, name: str = "DatabaseUnavailableError", package: bool = True
) -> dict[str, Any]:
    return {
        "proc": "service-0",
        "op": "read",
        "key": "a",
        "start": start,
        "end": start + 0.1,
        "outcome": "error",
        "error": name,
        "package": package,
    }


CLEAN = [
    write("a", 1, 1.0, 1.1),
    read("a", 0, 1.05),  # began before the write was acknowledged: may be older
    read("a", 1, 1.2),
    write("a", 2, 2.0, 2.1),
    read("a", 1, 2.1 + HEARD_WITHIN / 2),  # within the bound a change takes to be heard
    read("a", 2, 3.0),
    llm("g", 1.0, "service-0"),
    dump({"a": 2, "g": 0}),
    dump({"a": 2, "g": 0}, proc="service-1"),
    {"proc": "service-0", "op": "closed", "start": 101.0, "connections_left": 0, "seconds": 0.4},
]
STORED = {"a": 2, "g": 0}


def rules_broken(history: list[dict[str, Any]], stored: dict[str, Any] = STORED) -> dict[str, int]:
    verdict = check(history, stored, listen_timeout=LISTEN_TIMEOUT)
    return {rule: len(found) for rule, found in verdict.violations.items() if found}


def test_a_clean_history_breaks_no_rule() -> None:
    assert rules_broken(CLEAN) == {}


def test_a_lost_acknowledged_write_is_reported() -> None:
    assert rules_broken(CLEAN, {"a": 1, "g": 0}) == {
        "acknowledged write lost": 1,
        "cache diverged": 2,  # both dumps hold version 2, which the primary lost
    }


def test_a_write_that_failed_may_be_missing() -> None:
    failed = write("a", 3, 4.0, 4.5, outcome="error")
    assert rules_broken([*CLEAN, fault("primary killed", 3.9, 9.0), failed]) == {}


def test_a_stale_read_past_the_bound_is_reported() -> None:
    stale = read("a", 1, 2.1 + HEARD_WITHIN + 0.2)
    assert rules_broken([*CLEAN, stale]) == {"stale read": 1}


def test_a_fault_excuses_staleness_while_it_lasts_and_for_listen_timeout_after() -> None:
    late = 2.1 + HEARD_WITHIN + 0.2
    blackholed = fault("listener blackholed", 2.0, late - 0.1, target="service-0")
    assert rules_broken([*CLEAN, blackholed, read("a", 1, late)]) == {}
    # Aimed at another process, it excuses nothing here.
    elsewhere = fault("listener blackholed", 2.0, late - 0.1, target="service-1")
    assert rules_broken([*CLEAN, elsewhere, read("a", 1, late)]) == {"stale read": 1}
    # A fault that moves no primary and is aimed at nobody excuses no stale read.
    assert rules_broken([*CLEAN, fault("burst of changes", 2.0, late), read("a", 1, late)]) == {
        "stale read": 1
    }
    # A failover does: every listener is lost and found again.
    assert (
        rules_broken([*CLEAN, fault("primary killed", 2.0, late - 0.1), read("a", 1, late)]) == {}
    )
    # Long after it ended, nothing either.
    much_later = 2.0 + 3.0 + LISTEN_TIMEOUT + HEARD_WITHIN + 1
    assert rules_broken(
        [*CLEAN, fault("listener terminated", 2.0, 3.0), read("a", 1, much_later)]
    ) == {"stale read": 1}


def test_reads_from_a_standby_are_left_to_the_convergence_check() -> None:
    lagging = read("a", 1, 2.1 + HEARD_WITHIN + 0.2, proc="service-2", standby=True)
    assert rules_broken([*CLEAN, lagging]) == {}


def test_a_diverged_cache_is_reported() -> None:
    assert rules_broken([*CLEAN, dump({"a": 1, "g": 0}, proc="service-2")]) == {"cache diverged": 1}
    assert rules_broken([*CLEAN, dump({"a": 2, "g": None}, proc="service-2")]) == {
        "cache diverged": 1
    }


def test_a_second_generator_call_is_reported_unless_a_fault_explains_it() -> None:
    again = llm("g", 4.5, "service-1")
    assert rules_broken([*CLEAN, again]) == {"generated twice": 1}
    # Its first holder frozen past the lease while generating: counted apart.
    frozen = fault("service frozen", 0.9, 6.0, target="service-0")
    verdict = check([*CLEAN, again, frozen], STORED, listen_timeout=LISTEN_TIMEOUT)
    assert verdict.ok
    assert verdict.excused_generations == 1
    # A fault that came only after the first call had stored its row excuses nothing.
    later = fault("service frozen", 1.3 + SETTLING + 1, 20.0, target="service-0")
    assert rules_broken([*CLEAN, llm("g", 15.0, "service-1"), later]) == {"generated twice": 1}
    # Nor does one that cannot lose a stored row: another process frozen, a burst.
    for unrelated in (
        fault("service frozen", 0.9, 6.0, target="service-1"),
        fault("burst of changes", 0.9, 2.0),
        fault("generator fails", 0.9, 4.0),
    ):
        assert rules_broken([*CLEAN, again, unrelated]) == {"generated twice": 1}
    # A failover that cut the first holder's store does, even one that began as the
    # generator returned; not one that had ended before the first call began.
    assert rules_broken([*CLEAN, again, fault("primary killed", 1.2, 9.0)]) == {}
    assert rules_broken([*CLEAN, again, fault("primary killed", 1.35, 9.0)]) == {}
    earlier = fault("primary killed", -9.0, 0.5)
    assert rules_broken([*CLEAN, again, earlier]) == {"generated twice": 1}


def test_errors_outside_a_fault_and_foreign_errors_are_reported() -> None:
    assert rules_broken([*CLEAN, error(50.0)]) == {"error outside a fault": 1}
    during = [*CLEAN, fault("primary killed", 49.0, 60.0), error(50.0)]
    assert rules_broken(during) == {}
    assert rules_broken(
        [*CLEAN, fault("primary killed", 49.0, 60.0), error(60.0 + SETTLING + 1)]
    ) == {"error outside a fault": 1}
    foreign = error(50.0, name="InterfaceError", package=False)
    assert rules_broken([*CLEAN, fault("primary killed", 49.0, 60.0), foreign]) == {
        "foreign error": 1
    }
    generator = error(50.0, name="GeneratorFailureError", package=False)
    assert rules_broken([*CLEAN, fault("generator fails", 49.0, 52.0), generator]) == {}


def test_a_connection_left_after_close_is_reported() -> None:
    left = {"proc": "service-1", "op": "closed", "start": 101.0, "connections_left": 2}
    assert rules_broken([*CLEAN, {**left, "seconds": 0.5}]) == {"connection left after close": 1}
    slow = {**left, "connections_left": 0, "seconds": 3.5}  # close_timeout 2 s, + 1 s at most
    assert rules_broken([*CLEAN, slow]) == {"close past its bound": 1}


def test_a_cache_that_never_caches_again_is_reported() -> None:
    """get_many falls back to the database: a dead listener would still converge."""
    bypassed = {**dump({"a": 2, "g": 0}, proc="service-2"), "listening": False}
    assert rules_broken([*CLEAN, bypassed]) == {"cache not caching at the end": 1}
