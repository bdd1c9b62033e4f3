"""Reading a standby: a position its read's snapshot surely includes, and whose server.

A value read from a standby may be cached only if the standby had replayed the position
its Brand×Group needs (see `cache`). The position must come from before the read's
snapshot: read in the same statement, it would come after it, and a change replayed in
between would make an old row look new. So each read also reports how far its server had
replayed at its end, and the next read on the same connection uses that, a position its
snapshot surely includes; only when that is not enough (a new connection, a Brand×Group
changed since) is the position asked first, in a statement of its own.

Every answer names its server: a proxy in front may send two statements of one client to
two servers (PgBouncer rotating hosts, a load balancer), and then nothing is cached.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from weakref import WeakKeyDictionary

from pricing_store.db import log_statement
from pricing_store.lookup.queries import GET_MANY_SQL, GET_SQL

# Its address (none on a Unix socket) and port, and its start time for servers behind one.
SERVER = """format('%s:%s:%s@%s', inet_server_addr(), inet_server_port(), current_setting('port'),
                  extract(epoch FROM pg_postmaster_start_time()))"""
# NULL unless the server is a standby now (a primary that went through recovery or
# promotion keeps its last replay position, frozen).
REPLAYED = "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() END"
POSITION_SQL = f"SELECT {SERVER} AS server, {REPLAYED} AS replayed"
# The reads, with their server and its position at their end, in a row even for no match
# (its model_found NULL).
GET_ON_STANDBY_SQL = f"""
    SELECT found.*, here.server, here.replayed
    FROM ({POSITION_SQL}) AS here
    LEFT JOIN LATERAL ({GET_SQL}) AS found ON true
"""
GET_MANY_ON_STANDBY_SQL = f"""
    SELECT found.*, here.server, here.replayed
    FROM ({POSITION_SQL}) AS here
    LEFT JOIN LATERAL ({GET_MANY_SQL}) AS found ON true
"""
# What a read reports whose position is not known: less than any, so never enough.
POSITION_UNKNOWN = -1
# More than any position: if even this is not enough (a change whose position the primary
# has not told yet), asking the standby cannot help.
POSITION_MAX = 2**64

Position = tuple[str, int | None]  # the server, and how far it had replayed (None: primary)
Read = Callable[..., Awaitable[tuple[int | None, list[Any]]]]


class ReplayPositions:
    """Each connection's last known position, from the statement before its next read."""

    def __init__(self) -> None:
        self._last: WeakKeyDictionary[Any, Position] = WeakKeyDictionary()

    def reader(self, enough: Callable[[int | None], bool]) -> Read:
        """A read for `DriverPool.run` of one of the `..._ON_STANDBY_SQL`.

        It returns a position its snapshot includes (POSITION_UNKNOWN if its server is not
        the position's), and its rows; `enough` says whether a position would let its
        value be cached, or should be asked afresh first.
        """

        async def read(connection: Any, sql: str, *arguments: Any) -> tuple[int | None, list[Any]]:
            before = self._last.get(connection)
            if before is None or (not enough(before[1]) and enough(POSITION_MAX)):
                log_statement(POSITION_SQL)
                asked = await connection.fetchrow(POSITION_SQL)
                before = asked["server"], asked["replayed"]
            rows = await connection.fetch(sql, *arguments)
            server, at_end = rows[0]["server"], rows[0]["replayed"]
            self._last[connection] = server, at_end
            # A primary does not turn into a standby without a restart (a new start time).
            same = before[0] == server and (before[1] is not None or at_end is None)
            replayed = before[1] if same else POSITION_UNKNOWN
            return replayed, [row for row in rows if row["model_found"] is not None]

        return read
