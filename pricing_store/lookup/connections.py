"""A small pool of asyncpg connections for one-statement work, with one retry of a read.

asyncpg's own pool resets each connection as it is released (an extra round trip) and
costs more per checkout than a lookup's query; reads that leave no session state behind
need neither. Connections are reused newest first and opened on demand, up to `size`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from pricing_store.db import log_statement
from pricing_store.errors import (
    CONNECTION_GONE,
    DatabaseTimeoutError,
    PricingStoreError,
    raise_translated,
)

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
# Seconds a read waits for a free connection, as SQLAlchemy's pool_timeout by default.
DEFAULT_TIMEOUT = 30.0


class DriverPool:
    """Up to `size` connections, each used by one read at a time.

    A failure on the database side raises the package's error for it (see
    `errors.translate`); `where` names the server in messages. A read that finds every
    connection busy waits at most `timeout` seconds for one (DatabaseTimeoutError).
    It serves the lookup's reads and its short writes (leases, generated rows); see
    docs/scaling.md for how it compares with asyncpg's own pool.
    """

    def __init__(
        self, connect: Connect, size: int, *, where: str, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._connect = connect
        self._where = where
        self._size = size
        self._timeout = timeout
        self._idle: list[Any] = []
        self._free = asyncio.Semaphore(size)

    async def fetch(self, sql: str, *arguments: Any) -> Sequence[Any]:
        """Run a read and return its rows; retried once on a fresh connection if it was lost."""
        rows: Sequence[Any] = await self._read("fetch", sql, arguments)
        return rows

    async def fetchrow(self, sql: str, *arguments: Any) -> Any:
        """Run a read and return its first row, or None; the server stops at that row."""
        return await self._read("fetchrow", sql, arguments)

    async def _read(self, method: str, sql: str, arguments: Sequence[Any]) -> Any:
        if self._free.locked():  # every connection busy: wait, but not for ever
            await self._wait_for_a_connection()
        else:
            await self._free.acquire()  # returns at once
        try:
            try:
                return await self._read_on(self._pop_open(), method, sql, arguments)
            except CONNECTION_LOST:
                # A lost connection usually means the server dropped all of them.
                self._idle = [each for each in self._idle if not each.is_closed()]
                return await self._read_on(None, method, sql, arguments)
        except PricingStoreError:
            raise
        except Exception as error:
            raise_translated(error, self._where)
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
        self, connection: Any, method: str, sql: str, arguments: Sequence[Any]
    ) -> Any:
        if connection is None:
            connection = await self._connect()
        log_statement(sql, arguments)
        try:
            result = await getattr(connection, method)(sql, *arguments)
        except asyncpg.PostgresError as error:
            # The server refused the statement; the connection itself is fine, unless the
            # error says it is going away.
            if isinstance(error, CONNECTION_LOST):
                connection.terminate()
            else:
                self._idle.append(connection)
            raise
        except BaseException:
            connection.terminate()  # lost, or cancelled half-way: not reusable
            raise
        self._idle.append(connection)
        return result

    def _pop_open(self) -> Any:
        while self._idle:
            connection = self._idle.pop()
            if not connection.is_closed():
                return connection
        return None

    async def close(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        await asyncio.gather(*(connection.close() for connection in idle), return_exceptions=True)
