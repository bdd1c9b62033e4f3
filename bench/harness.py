"""Timing contenders in turns, and printing the table of ratios."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

ROUNDS = 5
# The contender most operations are measured against.
PREPARED = "raw asyncpg prepared fetchrow"

Run = Callable[[], Awaitable[None]]
Contender = tuple[str, int, Run, Run]  # name, units of work, set-up (untimed), run (timed)


class Line(NamedTuple):
    """One contender's medians, and its rate in each round (for paired ratios)."""

    operation: str
    contender: str
    unit: str
    per_second: float
    ratio: float  # to the operation's first contender
    rates: tuple[float, ...]


async def compare(
    operation: str, unit: str, contenders: list[Contender], *, rounds: int = ROUNDS
) -> list[Line]:
    """Time each contender `rounds` times, in turns; return median rates and paired ratios.

    Each ratio is the contender's rate over the first contender's, in the same round. The
    order of turns is reversed every other round, so no contender always goes first.
    """
    rates: dict[str, list[float]] = {name: [] for name, *_ in contenders}
    for round_number in range(rounds):
        turns = contenders if round_number % 2 == 0 else contenders[::-1]
        for name, work, setup, run in turns:
            await setup()
            gc.collect()  # no contender pays for the garbage another one left
            started = time.perf_counter()
            await run()
            rates[name].append(work / (time.perf_counter() - started))
    baseline = rates[contenders[0][0]]
    return [
        Line(
            operation,
            name,
            unit,
            statistics.median(own),
            paired_ratio(own, baseline),
            tuple(own),
        )
        for name, own in rates.items()
    ]


def paired_ratio(rates: Sequence[float], baseline: Sequence[float]) -> float:
    """The median over rounds of one rate over another measured in the same round."""
    return statistics.median(mine / base for mine, base in zip(rates, baseline, strict=True))


async def nothing() -> None:
    """A set-up with nothing to do."""


def print_table(lines: list[Line]) -> None:
    """Print the table; each ratio is against the first contender of its operation."""
    print(f"{'operation':<36} {'contender':<38} {'throughput':>18}  {'ratio':>7}")
    for operation, contender, unit, per_second, ratio, _ in lines:
        print(f"{operation:<36} {contender:<38} {per_second:>10,.0f} {unit:<7} {ratio:>7.2f}x")


def against(lines: list[Line], contender: str, limit: str, goal: float | None = None) -> str:
    """`contender`'s rate over `limit`'s (same operation) as a sentence, with the goal if any.

    The ratio is the median of the two rates' quotients round by round: turns close in
    time, unaffected by how a third contender of the operation happened to run.
    """
    mine = next(line for line in lines if line.contender == contender)
    theirs = next(
        line for line in lines if line.operation == mine.operation and line.contender == limit
    )
    wanted = f" (goal {goal:.2f}x)" if goal is not None else ""
    return f"{contender}: {paired_ratio(mine.rates, theirs.rates):.2f}x {limit}{wanted}"
