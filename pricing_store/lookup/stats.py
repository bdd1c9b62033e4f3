"""LookupStats: what an operator reads of a PricingLookup's cache and generations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class LookupStats:
    """A snapshot of a lookup's counters since it was made.

    `evictions` counts entries dropped, by cause: `key` (a change to that key), `table` (a
    change to too many keys to name, or TRUNCATE), `reconnect` (the listener was lost or
    fell silent, and is back) and `size` (least recently used, to make room).
    `leases_lost` counts generation leases another process took over while this lookup
    held them (its holder stalled past `lease_seconds`).
    """

    hits: int
    misses: int
    entries: int
    evictions: Mapping[str, int]
    notifications: int
    listening: bool
    generations_run: int
    generations_failed: int
    generations_in_flight: int
    leases_lost: int = 0

    @property
    def hit_rate(self) -> float:
        """Hits over lookups, 0.0 before any."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0
