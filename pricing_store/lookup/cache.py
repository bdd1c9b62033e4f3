"""An in-process cache of lookups that PostgreSQL keeps honest.

Triggers on both tables send a `pricing_store_changes` notification at the commit of any
statement that changed them, from any client, naming the changed keys (or none, for "the
whole table"). A listening connection evicts what each one names. PostgreSQL fails a
commit whose notification it cannot queue, so a live listener misses nothing; a dead one
is noticed by a heartbeat within `listen_timeout`. While the listener is not connected,
the cache is empty and bypassed; it is reconnected in the background, and serves again
once it listens.

A value read while a change to its key was on its way is not stored (see `Token`). Reading
from a standby, a value is stored only if the standby had replayed every change notified
for that key (see `ReferenceCache.replayed_enough`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, NamedTuple

from pricing_store.lookup.connections import Connect

CHANNEL = "pricing_store_changes"
RECONNECT_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0)
EVICTION_CAUSES = ("key", "table", "reconnect", "size")
# Seconds within which a listening connection that went silent is given up.
DEFAULT_LISTEN_TIMEOUT = 5.0
# Heartbeats sent per listen_timeout.
HEARTBEATS = 5
BRAND_GROUPS = "brand_groups"
# How many Brand×Groups to remember versions and replay positions of, between table-wide
# evictions (a few MB at most).
REMEMBERED_GROUPS = 100_000
# A replay position no standby has reached: the primary's is being asked for.
NOT_YET_KNOWN = 1 << 64
# Where the primary has written its WAL to: past the commit of every change notified so far
# (a commit is written before it is notified, unless the writer turned synchronous_commit
# off), and, unlike the insert position, at the end of a record a standby can replay to.
PRIMARY_POSITION_SQL = "SELECT pg_current_wal_lsn()"

Key = tuple[str, str, str | None]
Group = tuple[str, str]
# Told of every change heard: the table, and its changed keys (None for "any key").
OnChange = Callable[[str, list[tuple[str, ...]] | None], None]

logger = logging.getLogger(__name__)


class Token(NamedTuple):
    """What had been evicted when a read began; `put` stores its value only if nothing since."""

    epoch: int
    group_version: int


class ReferenceCache:
    """At most `size` entries, least recently used first out, keyed by the key as spelled.

    Each entry remembers its canonical key, so a change evicts every spelling of it. While
    not `active` it holds nothing, so a reader may look up `entries` without asking.
    """

    def __init__(self, size: int, key_of: Callable[[Any], Any] = lambda key: key) -> None:
        """`key_of` gives the key of a value noted in place of its key (see `notes`)."""
        self.size = size
        self.entries: OrderedDict[Any, Any] = OrderedDict()
        # A hit only appends its key, or its value when that names its key, to `notes`:
        # no object kept that was made for the hit. `tally` later counts the notes and
        # reorders the entries by them, before anything is stored, evicted or reported, so
        # the order and the count stay exact.
        self.notes: list[Any] = []
        self._key_of = key_of
        self._hits_tallied = 0
        self._canonical: dict[Any, Key] = {}
        self._spellings: dict[Group, set[Any]] = {}
        # Bumped by every table-wide eviction; per Brand×Group, by every eviction of it.
        self._epoch = 0
        self._group_versions: dict[Group, int] = {}
        # Reading from a standby: the primary's WAL position each change was notified at.
        self._needed_positions: dict[Group, int] = {}
        self._needed_everywhere = 0
        self.active = False
        self.notifications = 0
        self.evictions: dict[str, int] = dict.fromkeys(EVICTION_CAUSES, 0)

    def token(self, key: Key) -> Token:
        """Taken before a read of `key` (canonical) begins."""
        return Token(self._epoch, self._group_versions.get(key[:2], 0))

    def put(
        self, spelled: Any, key: Key, value: Any, token: Token, replayed: int | None = None
    ) -> None:
        """Store a value read since `token` was taken, unless a change to it came meanwhile.

        `replayed` is the standby's replay position the value was read at (None on a
        primary): below a position a change to the key was notified at, it is not stored.
        """
        if not self.active or token != self.token(key) or not self.replayed_enough(key, replayed):
            return
        self.tally()
        if spelled in self.entries:
            self.entries[spelled] = value
            self.entries.move_to_end(spelled)
            return
        if len(self.entries) >= self.size:
            oldest, _ = self.entries.popitem(last=False)
            self._forget(oldest)
            self.evictions["size"] += 1
        self.entries[spelled] = value
        self._canonical[spelled] = key
        self._spellings.setdefault(key[:2], set()).add(spelled)

    @property
    def hits(self) -> int:
        """Every hit noted so far."""
        return self._hits_tallied + len(self.notes)

    def tally(self) -> None:
        """Count the noted hits and move their entries to the end, the latest hit last."""
        notes = self.notes
        if not notes:
            return
        self._hits_tallied += len(notes)
        # Each entry's latest note, newest first (by identity: a value's hash may be costly);
        # once every entry has one, older notes can move nothing.
        entries, key_of = self.entries, self._key_of
        seen: set[object] = set()
        latest: list[Any] = []
        for noted in reversed(notes):
            mark = noted if noted.__class__ is tuple else id(noted)
            if mark not in seen:
                seen.add(mark)
                latest.append(noted)
                if len(latest) == len(entries):
                    break
        notes.clear()
        for noted in reversed(latest):
            key = noted if noted.__class__ is tuple else key_of(noted)
            if key in entries:
                entries.move_to_end(key)

    def _forget(self, spelled: Any) -> None:
        key = self._canonical.pop(spelled)
        spellings = self._spellings[key[:2]]
        spellings.discard(spelled)
        if not spellings:
            del self._spellings[key[:2]]

    def evict_keys(self, table: str, keys: Iterable[Sequence[str]]) -> None:
        """Evict every entry a change to these keys (of `table`) may have changed.

        A Brand×Group's change reaches every entry of it, with a model or without; a
        model's, only the entries of that model.
        """
        self.tally()  # notes of an entry evicted now must not reorder it once stored again
        for changed in keys:
            group: Group = (changed[0], changed[1])
            self._group_versions[group] = self._group_versions.get(group, 0) + 1
            for spelled in list(self._spellings.get(group, ())):
                if table == BRAND_GROUPS or self._canonical[spelled][2] == changed[2]:
                    del self.entries[spelled]
                    self._forget(spelled)
                    self.evictions["key"] += 1
        if len(self._group_versions) > REMEMBERED_GROUPS:
            self.clear("table")  # forgets the versions, and makes every read under way void

    def clear(self, cause: str | None) -> None:
        """Evict everything, counted under `cause`; reads under way do not store their result."""
        self.tally()
        if cause is not None:
            self.evictions[cause] += len(self.entries)
        self.entries.clear()
        self._canonical.clear()
        self._spellings.clear()
        self._group_versions.clear()
        self._epoch += 1

    def evict_table(self, table: str) -> None:
        """Evict whatever a change to any key of `table` may have changed."""
        self.tally()
        if table == BRAND_GROUPS:
            self.clear("table")
            return
        with_model = [spelled for spelled, key in self._canonical.items() if key[2] is not None]
        for spelled in with_model:
            del self.entries[spelled]
            self._forget(spelled)
        self.evictions["table"] += len(with_model)
        self._group_versions.clear()
        self._epoch += 1

    def need_position(self, groups: Iterable[Group] | None, position: int) -> None:
        """A standby must have replayed `position` before these groups' values are stored."""
        if groups is None:
            self._needed_everywhere = position
            self._needed_positions.clear()
            return
        for group in groups:
            self._needed_positions[group] = position
        if len(self._needed_positions) > REMEMBERED_GROUPS:
            self._needed_everywhere = max(self._needed_positions.values())
            self._needed_positions.clear()

    def replayed_enough(self, key: Key, replayed: int | None) -> bool:
        """Whether a value read at replay position `replayed` (None: on a primary) may stay."""
        if replayed is None:
            return True
        needed = self._needed_positions.get(key[:2], 0)
        return replayed >= needed and replayed >= self._needed_everywhere


class ChangeListener:
    """Holds a LISTEN connection for `cache`, checks that it is alive, and reconnects.

    A notification cannot be lost on a live listening connection (PostgreSQL fails the
    notifying commit instead), so what must be caught is a dead one: a heartbeat every
    `listen_timeout / HEARTBEATS` seconds must be answered within `listen_timeout`, or the
    connection is given up (a half-open TCP connection says nothing on its own). The cache is
    bypassed until a new connection listens, and emptied then.

    With `track_positions` (reads go to a standby) it also reads the primary's WAL position
    after notifications, on a second connection of its own: one query answers for every
    notification heard before it was sent, so a burst never queues queries, and nothing
    competes with the listening connection.
    """

    def __init__(
        self,
        connect: Connect,
        cache: ReferenceCache,
        on_change: OnChange,
        *,
        listen_timeout: float = DEFAULT_LISTEN_TIMEOUT,
        track_positions: bool = False,
    ) -> None:
        self._connect = connect
        self._cache = cache
        self._on_change_heard = on_change
        self._listen_timeout = listen_timeout
        self._track_positions = track_positions
        self._connection: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # Groups whose notified position is still to be read (None: every group).
        self._unplaced: set[Group] | None = set()
        self._position_wanted = asyncio.Event()

    async def start(self) -> None:
        """Return once listening: no change committed after this is missed."""
        await self._listen()
        self._spawn(self._heartbeat())
        if self._track_positions:
            self._spawn(self._read_positions())

    async def _listen(self) -> None:
        connection = await self._connect()
        try:
            await connection.add_listener(CHANNEL, self._on_change)
            connection.add_termination_listener(self._on_lost)
            if self._track_positions:
                # Anything committed so far must be replayed before a standby's value stays.
                self._cache.need_position(None, await connection.fetchval(PRIMARY_POSITION_SQL))
        except BaseException:
            connection.terminate()
            raise
        self._connection = connection
        # Anything may have changed while nobody listened.
        self._cache.clear("reconnect")
        self._cache.active = True

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_change(self, connection: object, pid: int, channel: str, payload: str) -> None:
        cache = self._cache
        cache.notifications += 1
        try:
            message = json.loads(payload)
            table, keys = str(message["t"]), message["k"]
        except (ValueError, TypeError, KeyError):
            # The oldest revision's trigger sends the table's name alone.
            table, keys = payload, None
        changed = [tuple(key) for key in keys] if isinstance(keys, list) else None
        if changed is None:
            cache.evict_table(table)
        else:
            cache.evict_keys(table, changed)
        if self._track_positions:
            self._place_later(None if changed is None else [(key[0], key[1]) for key in changed])
        self._on_change_heard(table, changed)

    def _place_later(self, groups: list[Group] | None) -> None:
        """Mark the groups unreplayable until the primary's position is read for them."""
        self._cache.need_position(groups, NOT_YET_KNOWN)
        if groups is None or self._unplaced is None:
            self._unplaced = None
        else:
            self._unplaced.update(groups)
        self._position_wanted.set()

    async def _read_positions(self) -> None:
        connection: Any = None
        while not self._closed:
            await self._position_wanted.wait()
            self._position_wanted.clear()
            # Only what was heard before the query is sent may take its answer.
            groups = None if self._unplaced is None else list(self._unplaced)
            self._unplaced = set()
            try:
                if connection is None or connection.is_closed():
                    connection = await self._connect()
                position = await asyncio.wait_for(
                    connection.fetchval(PRIMARY_POSITION_SQL), self._listen_timeout
                )
            except Exception:
                logger.warning("pricing_store: WAL position not read; retrying", exc_info=True)
                if connection is not None:
                    connection.terminate()
                    connection = None
                self._place_later(groups)  # still unplaced: try again shortly
                await asyncio.sleep(RECONNECT_DELAYS[-1])
                continue
            self._cache.need_position(groups, position)

    async def _heartbeat(self) -> None:
        every = self._listen_timeout / HEARTBEATS
        while not self._closed:
            await asyncio.sleep(every)
            self._cache.tally()  # so the notes of a lookup that only hits stay few
            connection = self._connection
            if connection is None:
                continue  # lost: reconnecting
            try:
                await asyncio.wait_for(
                    connection.fetchval("SELECT 1"), self._listen_timeout - every
                )
            except Exception:
                if connection is self._connection:
                    logger.warning("pricing_store: change listener silent; reconnecting")
                    connection.remove_termination_listener(self._on_lost)
                    connection.terminate()
                    self._on_lost()

    def _on_lost(self, *_: object) -> None:
        self._cache.active = False
        self._cache.clear("reconnect")
        self._connection = None
        if not self._closed:
            logger.warning("pricing_store: change listener lost; cache bypassed until back")
            self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                await asyncio.wait_for(self._listen(), self._listen_timeout)
            except Exception as error:
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                logger.info("pricing_store: change listener not back (%s); retrying", error)
                attempt += 1
                await asyncio.sleep(delay)
            else:
                logger.info("pricing_store: change listener back; cache in use again")
                return

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is up."""
        return self._connection is not None

    async def close(self) -> None:
        """Stop listening and reconnecting; the cache stays bypassed."""
        self._closed = True
        self._cache.active = False
        self._cache.clear(None)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.remove_termination_listener(self._on_lost)
            await connection.close()
