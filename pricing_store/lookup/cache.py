"""The cache's rules, in one class that does no I/O, owns no task and reads no clock.

It does not care where changes come from: today the listener task (`listener.py`) hears
the triggers' notifications (`notifications.py` reads them) and feeds each change to
`ReferenceCache` as an event; a read takes a token before it starts and asks `put` whether
its value may be stored. Each rule
is a method, so every order of events can be checked without a server
(tests/test_cache_interleavings.py); docs/architecture.md draws the whole.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

EVICTION_CAUSES = ("key", "table", "reconnect", "size")
BRAND_GROUPS, MODELS = "brand_groups", "models"
# How many Brand×Groups to remember versions and replay positions of, between table-wide
# evictions (a few MB at most).
REMEMBERED_GROUPS = 100_000

Key = tuple[str, str, str | None]
Group = tuple[str, str]
# A heard change: its table and keys; None for what the notification could not say.
Change = tuple[str | None, list[tuple[str, ...]] | None]


class Token(NamedTuple):
    """What had been evicted when a read began; `put` stores its value only if nothing since."""

    epoch: int
    group_version: int


class ReferenceCache:
    """At most `size` entries, least recently used first out, keyed by the key as spelled.

    Each entry remembers its canonical key, so a change evicts every spelling of it. While
    not `active` (the listener is down) it holds nothing, so a reader may look up `entries`
    without asking. With `tracks_positions`, reads come from a standby and `put` is given
    the standby's replay position.
    """

    def __init__(
        self,
        size: int,
        key_of: Callable[[Any], Any] = lambda key: key,
        *,
        tracks_positions: bool = False,
    ) -> None:
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
        self.tracks_positions = tracks_positions
        # Reading a standby. Changes are numbered as heard (`notifications`); a group (or
        # every group) whose latest change has no position yet is "unplaced" with that
        # number, oldest first.
        self._unplaced: dict[Group, int] = {}
        self._unplaced_everywhere = 0
        # The primary's WAL position a standby must have replayed, per group and for all.
        self._needed: dict[Group, int] = {}
        self._needed_everywhere = 0
        self.active = False
        self.notifications = 0
        self.evictions: dict[str, int] = dict.fromkeys(EVICTION_CAUSES, 0)

    def token(self, key: Key) -> Token:
        """Taken before a read of `key` (canonical) begins."""
        return Token(self._epoch, self._group_versions.get(key[:2], 0))

    def put(
        self, spelled: Any, key: Key, value: Any, token: Token, replayed: int | None = None
    ) -> bool:
        """Store a value read since `token` was taken, unless a change to it came meanwhile.

        `replayed` is the standby's replay position the value was read at (None on the
        primary). Returns whether it was stored.
        """
        if not self.active or token != self.token(key) or not self.replayed_enough(key, replayed):
            return False
        self.tally()
        if spelled in self.entries:
            self.entries[spelled] = value
            self.entries.move_to_end(spelled)
            return True
        if len(self.entries) >= self.size:
            oldest, _ = self.entries.popitem(last=False)
            self._forget(oldest)
            self.evictions["size"] += 1
        self.entries[spelled] = value
        self._canonical[spelled] = key
        self._spellings.setdefault(key[:2], set()).add(spelled)
        return True

    def replayed_enough(self, key: Key, replayed: int | None) -> bool:
        """Whether a value read at replay position `replayed` (None: on a primary) may stay."""
        if replayed is None:
            return True
        group = key[:2]
        if self._unplaced_everywhere or group in self._unplaced:
            return False
        return replayed >= self._needed.get(group, 0) and replayed >= self._needed_everywhere

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

    def changed(self, table: str | None, keys: Iterable[Sequence[str]] | None) -> None:
        """A change to these keys of `table` was heard (None: every key, or every table)."""
        self.notifications += 1
        if keys is None:
            self._evict_table(table)
            if self.tracks_positions:
                self._unplaced_everywhere = self.notifications
                self._unplaced.clear()  # placed with everything
            return
        self.tally()  # notes of an entry evicted now must not reorder it once stored again
        for changed in keys:
            group: Group = (changed[0], changed[1])
            self._group_versions[group] = self._group_versions.get(group, 0) + 1
            for spelled in list(self._spellings.get(group, ())):
                if table == BRAND_GROUPS or self._canonical[spelled][2] == changed[2]:
                    del self.entries[spelled]
                    self._forget(spelled)
                    self.evictions["key"] += 1
            if self.tracks_positions:
                self._unplaced.pop(group, None)  # kept oldest first
                self._unplaced[group] = self.notifications
        if len(self._group_versions) > REMEMBERED_GROUPS:
            self._clear("table")  # forgets the versions, and makes every read under way void
        if len(self._unplaced) > REMEMBERED_GROUPS:
            self._unplaced_everywhere = self.notifications
            self._unplaced.clear()

    def position_request(self) -> int | None:
        """What to send a request for the primary's WAL position under; None: none needed."""
        return self.notifications if self._unplaced or self._unplaced_everywhere else None

    def position_read(self, request: int, position: int) -> None:
        """The primary's position, read by the request sent under `request`.

        It is past every change heard before that request (a commit is written before it is
        notified), so those changes need it; changes heard since wait for a later reply.
        """
        if self._unplaced_everywhere and self._unplaced_everywhere <= request:
            self._unplaced_everywhere = 0
            self._needed_everywhere = max(self._needed_everywhere, position)
            self._needed.clear()  # positions only grow: this one covers them
        unplaced = self._unplaced
        while unplaced:
            group, heard_as = next(iter(unplaced.items()))
            if heard_as > request:
                break
            del unplaced[group]
            self._needed[group] = position
        if len(self._needed) > REMEMBERED_GROUPS:
            self._needed_everywhere = max(self._needed_everywhere, position)
            self._needed.clear()

    def lost(self, cause: str | None = "reconnect") -> None:
        """The listener is down (None: closed): hold nothing until it is back, store nothing."""
        self.active = False
        self._clear(cause)

    def back(self, request: int = 0, position: int | None = None) -> None:
        """The listener listens again; reading a standby, `position` is the primary's.

        `position` was read by a query sent, once LISTEN was in force, under `request`
        (see `position_request`): it is past everything committed before, which nobody
        heard, and it places the changes heard before `request`; those heard since wait
        for the next reply.
        """
        self._clear("reconnect")  # anything may have changed while nobody listened
        if position is not None:
            self._needed_everywhere = max(self._needed_everywhere, position)
            self._needed.clear()  # positions only grow: this one covers them
            self.position_read(request, position)
        self.active = True

    def _forget(self, spelled: Any) -> None:
        key = self._canonical.pop(spelled)
        spellings = self._spellings[key[:2]]
        spellings.discard(spelled)
        if not spellings:
            del self._spellings[key[:2]]

    def _clear(self, cause: str | None) -> None:
        """Evict everything, counted under `cause`; reads under way do not store their result."""
        self.tally()
        if cause is not None:
            self.evictions[cause] += len(self.entries)
        self.entries.clear()
        self._canonical.clear()
        self._spellings.clear()
        self._group_versions.clear()
        self._epoch += 1

    def _evict_table(self, table: str | None) -> None:
        """Evict whatever a change to any key of `table` (None: of either) may have changed."""
        if table != MODELS:
            self._clear("table")
            return
        self.tally()
        with_model = [spelled for spelled, key in self._canonical.items() if key[2] is not None]
        for spelled in with_model:
            del self.entries[spelled]
            self._forget(spelled)
        self.evictions["table"] += len(with_model)
        self._group_versions.clear()
        self._epoch += 1
