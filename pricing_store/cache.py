"""An in-process cache of lookups that PostgreSQL keeps honest.

Triggers on both tables send a `pricing_store_changes` notification at the commit of any
statement that changed them, from any client. A listening connection empties the cache on
each one. While the listener is not connected, the cache is empty and bypassed; it is
reconnected in the background, and the cache serves again once it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from pricing_store.connections import Connect

# Told of every change heard: the table, and its changed keys (None for "any key").
OnChange = Callable[[str, list[tuple[str, ...]] | None], None]

CHANNEL = "pricing_store_changes"
RECONNECT_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0)
EVICTION_CAUSES = ("key", "table", "gap", "reconnect", "size")

logger = logging.getLogger(__name__)


class ReferenceCache:
    """At most `size` entries; every change anywhere empties it.

    `generation` counts the emptyings: a value read from the database may be stored only if
    no change arrived while it was being read (`put` checks), so a stale read never sticks.
    While not `active` it holds nothing, so a reader may look up `entries` without asking.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: dict[Any, Any] = {}
        self.generation = 0
        self.active = False
        self.notifications = 0
        self.evictions: dict[str, int] = dict.fromkeys(EVICTION_CAUSES, 0)

    def clear(self) -> None:
        """Forget everything, and make reads that were under way not store their result."""
        self.entries.clear()
        self.generation += 1

    def put(self, key: Any, value: Any, generation: int) -> None:
        """Store a value read during `generation`, dropping the oldest entry when full."""
        if not self.active or generation != self.generation:
            return
        if len(self.entries) >= self.size:
            del self.entries[next(iter(self.entries))]
        self.entries[key] = value


class ChangeListener:
    """Holds a LISTEN connection for `cache`, reconnecting whenever it is lost."""

    def __init__(self, connect: Connect, cache: ReferenceCache, on_change: OnChange) -> None:
        self._connect = connect
        self._cache = cache
        self._on_change_heard = on_change
        self._connection: Any = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Return once listening: no change committed after this is missed."""
        await self._listen()

    async def _listen(self) -> None:
        connection = await self._connect()
        await connection.add_listener(CHANNEL, self._on_change)
        connection.add_termination_listener(self._on_lost)
        self._connection = connection
        # Anything may have changed while nobody listened.
        self._cache.clear()
        self._cache.active = True

    def _on_change(self, connection: object, pid: int, channel: str, payload: str) -> None:
        self._cache.clear()
        self._on_change_heard(payload, None)

    def _on_lost(self, *_: object) -> None:
        self._cache.active = False
        self._cache.clear()
        self._connection = None
        if not self._closed:
            logger.warning("pricing_store: change listener lost; cache bypassed until back")
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                await self._listen()
            except Exception:
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                attempt += 1
                await asyncio.sleep(delay)
            else:
                logger.info("pricing_store: change listener back; cache in use again")
                return

    async def close(self) -> None:
        """Stop listening and reconnecting; the cache stays bypassed."""
        self._closed = True
        self._cache.active = False
        self._cache.clear()
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.remove_termination_listener(self._on_lost)
            await connection.close()
