"""The one task that holds the LISTEN connection and feeds what it hears to the cache.

`ChangeListener.run` owns its connection for its whole life: connect, LISTEN, read the
primary's WAL position (reading a standby), then wait for notifications. A notification
cannot be lost on a live listening connection (PostgreSQL fails the notifying commit
instead), so what must be caught is a dead one: a heartbeat every `listen_timeout /
HEARTBEATS` seconds of silence must be answered within `listen_timeout`, or the connection
is given up (a half-open TCP connection says nothing on its own). On any failure the cache
is bypassed (`ReferenceCache.lost`), the connection closed in `finally`, and the task backs
off and reconnects. Cancelling the task is how it stops; nothing else starts work.

Reading a standby, positions are read on the same connection by the same task: one query
answers for every notification heard before it was sent, so a burst never queues queries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from pricing_store.errors import DatabaseUnavailableError, first_line, translate
from pricing_store.lookup.cache import Change, ReferenceCache
from pricing_store.lookup.connections import Connect, close_within
from pricing_store.lookup.notifications import CHANNEL, parse_change

# Seconds between reconnection attempts, the last one repeated.
RECONNECT_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0)
DEFAULT_LISTEN_TIMEOUT = 5.0
# Heartbeats sent per listen_timeout of silence.
HEARTBEATS = 5
# Where the primary has written its WAL to: past the commit of every change notified so far
# (a commit is written before it is notified, unless the writer turned synchronous_commit
# off), and, unlike the insert position, at the end of a record a standby can replay to.
PRIMARY_POSITION_SQL = "SELECT pg_current_wal_lsn()"

logger = logging.getLogger(__name__)


class ChangeListener:
    """Listens for `cache` on connections from `connect`, one at a time, until cancelled."""

    def __init__(
        self,
        connect: Connect,
        cache: ReferenceCache,
        on_change: Callable[[Change], None],
        *,
        listen_timeout: float,
        where: str,
    ) -> None:
        self._connect = connect
        self._where = where
        self._cache = cache
        self._on_change = on_change
        self._timeout = listen_timeout
        # Set by asyncpg's callbacks: a position is wanted, or the connection is gone.
        self._wake = asyncio.Event()
        self.listening = False

    async def run(self, started: asyncio.Future[None]) -> None:
        """Listen until cancelled; `started` gets the first attempt's outcome.

        A first attempt that fails ends the task with the package's error for it in
        `started` (the lookup's start raises it); later failures are retried.
        """
        failures = 0
        causes: set[type[Exception]] = set()  # what this outage was logged for
        while True:
            connection: Any = None
            failure: Exception = ConnectionError("the listening connection ended")
            try:
                async with asyncio.timeout(self._timeout):
                    connection = await self._connect()
                    connection.add_termination_listener(self._gone)
                    await connection.add_listener(CHANNEL, self._heard)
                    request = self._cache.notifications  # heard so far: before the query
                    position = (
                        await connection.fetchval(PRIMARY_POSITION_SQL)
                        if self._cache.tracks_positions
                        else None
                    )
                self._cache.back(request, position)
                self.listening, failures = True, 0
                if not started.done():
                    started.set_result(None)
                else:
                    logger.info("pricing_store: change listener back; cache in use again")
                await self._serve(connection)
            except Exception as error:
                failure = error
            finally:
                self.listening = False
                self._cache.lost()
                if connection is not None:
                    await close_within(connection)
            if not started.done():  # the first attempt: the lookup's start raises its error
                started.set_exception(self._translated(failure))
                return
            # Once an outage for each kind of cause, not once a retry: a failover would
            # repeat it every second, yet a new cause (a refused login) must be heard.
            if failures == 0:
                causes.clear()
            log = logger.debug if type(failure) in causes else logger.warning
            log("pricing_store: change listener lost (%r); cache bypassed", failure)
            causes.add(type(failure))
            await asyncio.sleep(RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)])
            failures += 1

    def _translated(self, error: Exception) -> Exception:
        """The package's error for a failure to listen."""
        package_error = translate(error, self._where) or DatabaseUnavailableError(
            self._where, f"not listening for changes: {first_line(error)}"
        )
        if package_error is not error:  # already the package's: its cause is set
            package_error.__cause__ = error
        return package_error

    def _heard(self, connection: object, pid: int, channel: str, payload: str) -> None:
        """The callback: hands the change to the cache and wakes the task, nothing more."""
        change = parse_change(payload)
        self._cache.changed(*change)
        self._on_change(change)
        if self._cache.tracks_positions:
            self._wake.set()

    def _gone(self, connection: object) -> None:
        """The callback for a connection the server or the network closed: wakes the task."""
        self._wake.set()

    async def _serve(self, connection: Any) -> None:
        """Answer position requests and send heartbeats until the connection fails."""
        every = self._timeout / HEARTBEATS
        while True:
            self._wake.clear()
            if connection.is_closed():
                raise ConnectionError("the listening connection was closed")
            request = self._cache.position_request()
            if request is not None:
                self._cache.position_read(request, await self._ask(connection, every, True))
                continue
            try:
                async with asyncio.timeout(every):
                    await self._wake.wait()
                continue
            except TimeoutError:
                pass
            self._cache.tally()  # so the notes of a lookup that only hits stay few
            await self._ask(connection, every, False)

    async def _ask(self, connection: Any, every: float, position: bool) -> Any:
        """The primary's position, or a heartbeat's answer, within what is left of the timeout."""
        async with asyncio.timeout(self._timeout - every):
            return await connection.fetchval(PRIMARY_POSITION_SQL if position else "SELECT 1")
