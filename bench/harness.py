"""Timing contenders in turns, and printing the table of ratios."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable

ROUNDS = 5
# The contender most operations are measured against.
PREPARED = "raw asyncpg prepared fetchrow"

Run = Callable[[], Awaitable[None]]
Contender = tuple[str, int, Run, Run]  # name, units of work, set-up (untimed), run (timed)
Line = tuple[str, str, str, float, float]  # operation, contender, unit, per second, ratio


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
        (
            operation,
            name,
            unit,
            statistics.median(own),
            statistics.median(mine / base for mine, base in zip(own, baseline, strict=True)),
        )
        for name, own in rates.items()
    ]


async def nothing() -> None:
    """A set-up with nothing to do."""


def print_table(lines: list[Line]) -> None:
    """Print the table; each ratio is against the first contender of its operation."""
    print(f"{'operation':<36} {'contender':<38} {'throughput':>18}  {'ratio':>7}")
    for operation, contender, unit, per_second, ratio in lines:
        print(f"{operation:<36} {contender:<38} {per_second:>10,.0f} {unit:<7} {ratio:>7.2f}x")


def against(lines: list[Line], contender: str, limit: str, goal: float | None = None) -> str:
    """`contender`'s rate over `limit`'s as a sentence, with the goal when there is one.

    Both ratios to their operation's first contender are medians of paired rounds; their
    quotient compares the two contenders as closely in time as the table allows.
    """
    ratios = {name: ratio for _, name, _, _, ratio in lines}
    wanted = f" (goal {goal:.2f}x)" if goal is not None else ""
    return f"{contender}: {ratios[contender] / ratios[limit]:.2f}x {limit}{wanted}"
