"""A small pool of asyncpg connections for one-statement work, with one retry of a read.

asyncpg's own pool resets each connection as it is released (an extra round trip) and
costs more per checkout than a lookup's query; reads that leave no session state behind
need neither. Connections are reused newest first and opened on demand, up to `size`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from pricing_store.db import log_statement
from pricing_store.errors import (
    CONNECTION_GONE,
    DatabaseTimeoutError,
    LookupClosedError,
    PricingStoreError,
    package_error,
)
from pricing_store.lookup.lifecycle import CallsUnderWay, State, result_of

# Errors after which the same statement on a fresh connection may well succeed: the server
# closed the connection (restart, failover, pg_terminate_backend), is shutting down, or is a
# standby now. A statement cancelled by statement_timeout is not one: its connection is fine.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.InternalClientError,
    *CONNECTION_GONE,
)

Connect = Callable[[], Awaitable[Any]]
# What runs on a connection: `read(connection, sql, *arguments)`, as asyncpg's own methods
# taken from the class are called.
Read = Callable[..., Awaitable[Any]]
# Seconds a read waits for a free connection, as SQLAlchemy's pool_timeout by default.
DEFAULT_TIMEOUT = 30.0
# Seconds a connection is given to close politely before it is cut (the server may be gone):
# under a second, so that close() keeps its promise of close_timeout plus a second.
CLOSE_GRACE = 0.8


async def close_within(connection: Any, seconds: float = CLOSE_GRACE) -> None:
    """Close politely, or cut the connection after `seconds` (a silent server never answers)."""
    try:
        async with asyncio.timeout(seconds):
            await connection.close(timeout=seconds)
    except Exception:  # the timeout's own included
        connection.terminate()


class DriverPool:
    """Up to `size` connections, each used by one read at a time; open from the start.

    A failure on the database side raises the package's error for it (see
    `errors.translate`); `where` names the server in messages. A read that finds every
    connection busy waits at most `timeout` seconds for one (DatabaseTimeoutError).
    It serves the lookup's reads and its short writes (leases, generated rows); see
    docs/scaling.md for how it compares with asyncpg's own pool. `close` is final.
    """

    def __init__(
        self, connect: Connect, size: int, *, where: str, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._connect = connect
        self._where = where
        self._size = size
        self._timeout = timeout
        self._idle: list[Any] = []
        self._in_use: set[Any] = set()
        self._connecting: set[asyncio.Future[Any]] = set()
        self._free = asyncio.Semaphore(size)
        self._reads = CallsUnderWay()
        self.state = State.OPEN

    async def fetch(self, sql: str, *arguments: Any) -> Sequence[Any]:
        """Run a read and return its rows; retried once on a fresh connection if it was lost."""
        rows: Sequence[Any] = await self._read(asyncpg.Connection.fetch, sql, arguments)
        return rows

    async def fetchrow(self, sql: str, *arguments: Any) -> Any:
        """Run a read and return its first row, or None; the server stops at that row."""
        return await self._read(asyncpg.Connection.fetchrow, sql, arguments)

    async def run(self, read: Read, sql: str, *arguments: Any) -> Any:
        """`read(connection, sql, *arguments)` on one connection, retried as a read is."""
        return await self._read(read, sql, arguments)

    async def _read(self, method: Read, sql: str, arguments: Sequence[Any]) -> Any:
        if self._free.locked():  # every connection busy: wait, but not for ever
            await self._wait_for_a_connection()
        else:
            await self._free.acquire()  # returns at once
        try:
            with self._reads:
                if self.state is not State.OPEN:
                    raise LookupClosedError()
                try:
                    return await self._read_on(self._pop_open(), method, sql, arguments)
                except CONNECTION_LOST as error:
                    if self.state is not State.OPEN or isinstance(error, TimeoutError):
                        raise
                    # A lost connection usually means the server dropped all of them.
                    self._idle = [each for each in self._idle if not each.is_closed()]
                    return await self._read_on(None, method, sql, arguments)
        except Exception as error:
            if self.state is not State.OPEN and not isinstance(error, LookupClosedError):
                raise LookupClosedError() from error  # cut by close()
            if isinstance(error, PricingStoreError):
                raise
            if isinstance(error, TimeoutError):  # the engine's command_timeout
                raise DatabaseTimeoutError(
                    f"a statement ran past the engine's command_timeout at {self._where}"
                ) from error
            raise package_error(error, self._where) from error
        finally:
            self._free.release()

    async def _wait_for_a_connection(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._free.acquire()
        except TimeoutError:
            raise DatabaseTimeoutError(
                f"no read connection free within {self._timeout:g} s "
                f"(all {self._size} in use; raise pool_size or pool_timeout)"
            ) from None

    async def _read_on(
        self, connection: Any, method: Read, sql: str, arguments: Sequence[Any]
    ) -> Any:
        if connection is None:
            # A task of its own, so that close() can cut a connect the network holds up.
            connecting = asyncio.ensure_future(self._connect())
            self._connecting.add(connecting)
            try:
                connection = await result_of(connecting)
            except BaseException:  # the caller gave up: so does the connect
                finished = not connecting.cancel() and not connecting.cancelled()
                if finished and connecting.exception() is None:
                    connecting.result().terminate()
                raise
            finally:
                self._connecting.discard(connecting)
            if self.state is State.CLOSED:  # closed as it connected: nothing runs on it
                connection.terminate()
                raise LookupClosedError()
        self._in_use.add(connection)
        log_statement(sql, arguments)
        try:
            result = await method(connection, sql, *arguments)
        except asyncpg.PostgresError as error:
            # The server refused the statement; the connection itself is fine, unless the
            # error says it is going away.
            self._give_back(connection, reusable=not isinstance(error, CONNECTION_LOST))
            raise
        except BaseException:
            self._give_back(connection, reusable=False)  # lost, or cancelled half-way
            raise
        self._give_back(connection, reusable=True)
        return result

    def _give_back(self, connection: Any, *, reusable: bool) -> None:
        self._in_use.discard(connection)
        if reusable and self.state is not State.CLOSED:
            self._idle.append(connection)  # closed by close() if closing
        else:
            connection.terminate()

    def _pop_open(self) -> Any:
        while self._idle:
            connection = self._idle.pop()
            if not connection.is_closed():
                return connection
        return None

    async def close(self, wait: float = 0.0) -> None:
        """Refuse new reads, give those under way `wait` seconds, cut the rest, close all.

        Returns within `wait` plus CLOSE_GRACE seconds, whatever the network does.
        """
        if self.state is State.OPEN:
            self.state = State.CLOSING
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._reads.none.wait()
            self.state = State.CLOSED
            for connection in list(self._in_use):
                self._give_back(connection, reusable=False)
            for connecting in self._connecting:
                connecting.cancel()
        idle, self._idle = self._idle, []
        await asyncio.gather(*(close_within(connection) for connection in idle))
