"""Every order of a few events, each step checked against a plain model of the database.

The world: a primary whose WAL position grows by one per commit, a standby that replays
those commits in order, the listener's connection (which loses what it had not delivered
when it is lost), and the cache. A value read is the key's version: the WAL position of the
latest commit that changed it, as of the snapshot the read saw. On a standby, a read learns
how far the standby has replayed at any time before it takes its snapshot (even before it
began: from the previous read on its connection); replay may advance in between, so the
value is at least as new as the position it reports, never older.

After every step: no entry is older than a change heard before it (nor than a commit made
before the listener came back), and nothing is held while the listener is down. After every
order, once everything is heard, answered and replayed, a fresh read is stored again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pricing_store.lookup import cache as cache_module
from pricing_store.lookup.cache import ReferenceCache, Token

Key = tuple[str, str, str | None]
Keys = list[tuple[str, ...]] | None

GROUP: Key = ("Levi's", "jeans", None)
MODEL_501: Key = ("Levi's", "jeans", "501")
MODEL_505: Key = ("Levi's", "jeans", "505")
OTHER: Key = ("Nike", "sneakers", None)
KEYS = (GROUP, MODEL_501, MODEL_505, OTHER)

BRAND_GROUPS = "brand_groups"
MODELS = "models"


def named(key: Key) -> tuple[str, ...]:
    """A key as a notification names it: without its model when it has none."""
    return tuple(part for part in key if part is not None)


def affected(table: str | None, keys: Keys) -> frozenset[Key]:
    """The keys whose value a change to `keys` of `table` (None: all of it) may change."""
    if keys is None:
        if table == MODELS:
            return frozenset(key for key in KEYS if key[2] is not None)
        return frozenset(KEYS)
    names = {tuple(changed) for changed in keys}
    if table == BRAND_GROUPS:
        return frozenset(key for key in KEYS if key[:2] in names)
    return frozenset(key for key in KEYS if key in names)


@dataclass
class Read:
    key: Key
    token: Token
    value: int | None = None
    replayed: int | None = None


@dataclass
class Notification:
    table: str | None
    keys: Keys
    position: int
    # The listening connection it was sent to; None: nobody listened when it committed.
    session: int | None


@dataclass
class World:
    """The primary, the standby, the listener, and the cache under test."""

    standby: bool
    # The keys read afresh once everything has been heard, answered and replayed.
    read_at_the_end: Sequence[Key] = KEYS
    wal: int = 0
    replayed: int = 0
    listening: bool = True
    session: int = 0
    # What each commit changed, by its position (minus one).
    commits: list[frozenset[Key]] = field(default_factory=list)
    # The oldest version the cache may hold of a key: what it heard, or had when back.
    known: dict[Key, int] = field(default_factory=dict)
    unheard: dict[str, Notification] = field(default_factory=dict)
    requests: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    reads: dict[str, Read] = field(default_factory=dict)
    # The replay position each read learnt before its snapshot, by the read's name.
    learnt: dict[str, int] = field(default_factory=dict)
    # Listening again: the position query sent once LISTEN is in force, not yet answered.
    rejoining: tuple[int, int] | None = None
    cache: ReferenceCache = field(init=False)

    def __post_init__(self) -> None:
        self.cache = ReferenceCache(len(KEYS), tracks_positions=self.standby)
        self.cache.back(0, self.wal if self.standby else None)

    def version(self, key: Key, at: int) -> int:
        for position in range(at, 0, -1):
            if key in self.commits[position - 1]:
                return position
        return 0

    def commit(self, name: str, table: str | None, keys: Keys, changes: frozenset[Key]) -> None:
        self.wal += 1
        self.commits.append(changes)
        session = self.session if self.listening else None
        self.unheard[name] = Notification(table, keys, self.wal, session)

    def hear(self, name: str) -> None:
        notification = self.unheard.pop(name)
        if not self.listening or notification.session != self.session:
            return  # it went down with the connection it was sent to
        self.cache.changed(notification.table, notification.keys)
        for key in self.commits[notification.position - 1]:
            self.known[key] = max(self.known.get(key, 0), notification.position)

    def send(self, name: str) -> None:
        request = self.cache.position_request()
        # The harshest legal answer: the primary's position when the request was sent.
        self.requests[name] = None if request is None else (request, self.wal)

    def answer(self, name: str) -> None:
        sent = self.requests.pop(name)
        if sent is not None:
            self.cache.position_read(*sent)

    def replay(self) -> None:
        assert self.replayed < self.wal
        self.replayed += 1

    def start(self, name: str, key: Key) -> None:
        self.reads[name] = Read(key, self.cache.token(key))

    def position(self, name: str) -> None:
        """A standby read learns how far the standby has replayed (before its snapshot)."""
        self.learnt[name] = self.replayed

    def execute(self, name: str) -> None:
        """The read takes its snapshot: the key's version as replayed (written) by now."""
        read = self.reads[name]
        if self.standby:
            read.replayed = self.learnt.pop(name)  # learnt first, or this fails
        read.value = self.version(read.key, self.replayed if self.standby else self.wal)

    def finish(self, name: str) -> bool:
        read = self.reads.pop(name)
        assert read.value is not None, "finished before it executed"
        stored = self.cache.put(read.key, read.key, read.value, read.token, read.replayed)
        assert not stored or self.cache.entries[read.key] == read.value
        return stored

    def lose(self) -> None:
        self.listening = False
        self.rejoining = None
        self.session += 1
        self.cache.lost()

    def relisten(self) -> None:
        """LISTEN is in force again, and the position query is sent (its harshest answer)."""
        self.listening = True
        self.rejoining = (self.cache.notifications, self.wal)

    def come_back(self) -> None:
        """The position query is answered: the cache is back (what was heard since, too)."""
        assert self.rejoining is not None
        request, position = self.rejoining
        self.rejoining = None
        self.cache.back(request, position if self.standby else None)
        for key in KEYS:
            self.known[key] = max(self.known.get(key, 0), self.version(key, position))

    def listen_again(self) -> None:
        self.relisten()
        self.come_back()

    def stale(self) -> list[str]:
        """What the cache holds that the database, as far as it was told, made older."""
        if not self.cache.entries:
            return []
        if not self.listening:
            return [f"holds {list(self.cache.entries)} while the listener is down"]
        return [
            f"{key} holds version {value}, older than version {self.known[key]}"
            for key, value in self.cache.entries.items()
            if value < self.known.get(key, 0)
        ]

    def converge(self) -> list[str]:
        """Hear, answer and replay everything, then read every key: each must be stored."""
        for name in list(self.unheard):
            self.hear(name)
        for name in list(self.requests):
            self.answer(name)
        if not self.listening:
            self.relisten()
        if self.rejoining is not None:
            self.come_back()
        request = self.cache.position_request()
        if request is not None:
            self.cache.position_read(request, self.wal)
        if self.cache.position_request() is not None:
            return ["still asks for a position after every change was placed"]
        self.replayed = self.wal
        replayed = self.wal if self.standby else None
        problems = []
        for key in self.read_at_the_end:
            value = self.version(key, self.wal)
            if not self.cache.put(key, key, value, self.cache.token(key), replayed):
                problems.append(f"a fresh read of {key} is not stored")
            elif self.cache.entries[key] != value:
                problems.append(f"a fresh read of {key} does not hold the primary's value")
        return problems + self.stale()


@dataclass(frozen=True)
class Step:
    name: str
    act: Callable[[World], object]
    after: tuple[str, ...] = ()
    # How many commits must have been made first (the standby replays only what was written).
    commits: int = 0


def change(name: str, table: str | None, keys: Keys) -> list[Step]:
    changes = affected(table, keys)
    return [
        Step(f"commit {name}", lambda world: world.commit(name, table, keys, changes)),
        Step(f"hear {name}", lambda world: world.hear(name), after=(f"commit {name}",)),
    ]


def position(name: str) -> list[Step]:
    return [
        Step(f"send {name}", lambda world: world.send(name)),
        Step(f"answer {name}", lambda world: world.answer(name), after=(f"send {name}",)),
    ]


def replays(count: int) -> list[Step]:
    return [
        Step(
            f"replay {number}",
            lambda world: world.replay(),
            after=(f"replay {number - 1}",) if number > 1 else (),
            commits=number,
        )
        for number in range(1, count + 1)
    ]


def read(name: str, key: Key, *, standby: bool) -> list[Step]:
    started = (f"start {name}",)
    learnt = [Step(f"position {name}", lambda world: world.position(name))]  # any time before
    return [
        Step(f"start {name}", lambda world: world.start(name, key)),
        *(learnt if standby else []),
        Step(
            f"execute {name}",
            lambda world: world.execute(name),
            after=(*started, f"position {name}") if standby else started,
        ),
        Step(f"finish {name}", lambda world: world.finish(name), after=(f"execute {name}",)),
    ]


def outage() -> list[Step]:
    return [
        Step("lose the listener", lambda world: world.lose()),
        Step("listen again", lambda world: world.relisten(), after=("lose the listener",)),
        Step("back", lambda world: world.come_back(), after=("listen again",)),
    ]


def orders(steps: Sequence[Step], before: Sequence[tuple[str, str]] = ()) -> list[list[int]]:
    """Every order of `steps` that respects causality, as indexes into `steps`."""
    index = {step.name: number for number, step in enumerate(steps)}
    needs = [0] * len(steps)
    for number, step in enumerate(steps):
        for earlier in step.after:
            needs[number] |= 1 << index[earlier]
    for earlier, later in before:
        needs[index[later]] |= 1 << index[earlier]
    commit_mask = sum(1 << n for n, step in enumerate(steps) if step.name.startswith("commit "))
    everything = (1 << len(steps)) - 1
    found: list[list[int]] = []
    order: list[int] = []

    def extend(done: int) -> None:
        if done == everything:
            found.append(order.copy())
            return
        commits = (done & commit_mask).bit_count()
        for number, step in enumerate(steps):
            bit = 1 << number
            if not done & bit and needs[number] & ~done == 0 and commits >= step.commits:
                order.append(number)
                extend(done | bit)
                order.pop()

    extend(0)
    return found


def check_every_order(
    steps: Sequence[Step],
    *,
    standby: bool,
    before: Sequence[tuple[str, str]] = (),
    read_at_the_end: Sequence[Key] = KEYS,
) -> int:
    """Run every order from the start, checking after each step; returns how many ran.

    Where the steps read, some order must store what was read: a read never stored would
    pass whatever position it reported.
    """
    count = stored = 0
    acts = [step.act for step in steps]
    for order in orders(steps, before):
        count += 1
        world = World(standby=standby, read_at_the_end=read_at_the_end)
        for done, number in enumerate(order, 1):
            if acts[number](world) is True:  # a read's finish that stored it
                stored += 1
            if world.cache.entries and (problems := world.stale()):
                ran = [steps[n].name for n in order[:done]]
                pytest.fail(f"after {ran}: {problems}")
        if problems := world.converge():
            ran = [steps[n].name for n in order]
            pytest.fail(f"after {ran} and everything since: {problems}")
    reads = any(step.name.startswith("finish ") for step in steps)
    assert stored or not reads, "no order stores what was read"
    return count


def test_a_reply_to_a_request_sent_before_a_second_change_does_not_let_its_read_be_stored() -> None:
    steps = [
        *change("501", MODELS, [named(MODEL_501)]),
        *change("505", MODELS, [named(MODEL_505)]),
        *position("after 501"),
        *replays(1),
        *read("505", MODEL_505, standby=True),
    ]
    count = check_every_order(
        steps,
        standby=True,
        before=[
            ("commit 501", "commit 505"),
            ("hear 501", "hear 505"),  # notifications arrive in commit order
            ("hear 501", "send after 501"),
        ],
        read_at_the_end=(MODEL_501, MODEL_505),
    )
    assert count == 35_640


def test_a_read_on_the_primary_overlapping_a_change_or_an_outage_is_never_kept_stale() -> None:
    steps = [
        *change("jeans", BRAND_GROUPS, [named(GROUP)]),
        *change("501", MODELS, [named(MODEL_501)]),
        *read("jeans", GROUP, standby=False),
        *outage(),
    ]
    count = check_every_order(
        steps,
        standby=False,
        before=[("commit jeans", "commit 501"), ("hear jeans", "hear 501")],
        read_at_the_end=(GROUP, MODEL_501),
    )
    assert count == 8_400


def test_a_brand_group_change_and_a_model_change_on_a_standby_keep_a_model_read_honest() -> None:
    steps = [
        *change("jeans", BRAND_GROUPS, [named(GROUP)]),
        *change("501", MODELS, [named(MODEL_501)]),
        *position("after both"),
        *replays(1),
        *read("501", MODEL_501, standby=True),
    ]
    count = check_every_order(
        steps,
        standby=True,
        before=[
            ("commit jeans", "commit 501"),
            ("hear jeans", "hear 501"),
            ("hear 501", "send after both"),
        ],
        read_at_the_end=(GROUP, MODEL_501),
    )
    assert count == 7_920


def test_a_change_to_a_whole_table_on_a_standby_waits_for_its_position() -> None:
    steps = [
        *change("everything", None, None),
        *position("after everything"),
        *replays(1),
        *read("jeans", GROUP, standby=True),
    ]
    count = check_every_order(
        steps,
        standby=True,
        before=[("hear everything", "send after everything")],
        read_at_the_end=(GROUP, OTHER),
    )
    assert count == 1_008


def test_a_standby_read_after_the_listener_was_lost_waits_for_what_was_written_meanwhile() -> None:
    steps = [
        *change("jeans", BRAND_GROUPS, [named(GROUP)]),
        *outage(),
        *replays(1),
        *read("jeans", GROUP, standby=True),
    ]
    count = check_every_order(steps, standby=True, read_at_the_end=(GROUP, MODEL_501))
    assert count == 16_800


def test_a_standby_read_asking_its_position_after_its_snapshot_would_be_caught_stale() -> None:
    """Why a read asks first: replay may pass a change between its snapshot and the question."""

    def snapshot(world: World, name: str) -> None:
        read = world.reads[name]
        read.value = world.version(read.key, world.replayed)

    def position_after(world: World, name: str) -> None:
        world.reads[name].replayed = world.replayed

    steps = [
        *change("jeans", BRAND_GROUPS, [named(GROUP)]),
        *position("after jeans"),
        *replays(1),
        Step("start late", lambda world: world.start("late", GROUP)),
        Step("snapshot late", lambda world: snapshot(world, "late"), after=("start late",)),
        Step(
            "position late", lambda world: position_after(world, "late"), after=("snapshot late",)
        ),
        Step("finish late", lambda world: world.finish("late"), after=("position late",)),
    ]
    with pytest.raises(pytest.fail.Exception, match="holds version 0, older than version 1"):
        check_every_order(steps, standby=True, before=[("hear jeans", "send after jeans")])


@pytest.mark.parametrize("placed_at_once", [12, 4], ids=["all placed at once", "in batches"])
def test_a_standby_read_is_stored_again_after_more_groups_changed_than_are_remembered(
    monkeypatch: pytest.MonkeyPatch, placed_at_once: int
) -> None:
    monkeypatch.setattr(cache_module, "REMEMBERED_GROUPS", 10)
    world = World(standby=True)
    groups = [named(GROUP), *(("Brand", f"group {number}") for number in range(11))]
    for first in range(0, len(groups), placed_at_once):
        for group in groups[first : first + placed_at_once]:
            name = "/".join(group)
            world.commit(name, BRAND_GROUPS, [group], affected(BRAND_GROUPS, [group]))
            world.hear(name)
        world.send(f"after {first}")
        world.answer(f"after {first}")
    assert world.cache.position_request() is None
    for key in (GROUP, OTHER):
        world.start("too early", key)
        world.position("too early")
        world.execute("too early")
        assert not world.finish("too early")
    while world.replayed < world.wal:
        world.replay()
    for key in (GROUP, OTHER):
        world.start("replayed", key)
        world.position("replayed")
        world.execute("replayed")
        assert world.finish("replayed"), f"{key} is never stored again"
    assert world.stale() == []


CHANGES: list[tuple[str | None, Keys]] = [
    (BRAND_GROUPS, [named(GROUP)]),
    (BRAND_GROUPS, [named(OTHER)]),
    (MODELS, [named(MODEL_501)]),
    (MODELS, [named(MODEL_505)]),
    (MODELS, [named(MODEL_501), named(MODEL_505)]),
    (BRAND_GROUPS, None),
    (MODELS, None),
    (None, None),
]


class TheCacheAgainstTheDatabase(RuleBasedStateMachine):
    """Any sequence of the same events, on a primary or a standby, checked after each."""

    world: World

    def __init__(self) -> None:
        super().__init__()
        self.events = 0
        self.ahead: int | None = None

    def name(self) -> str:
        self.events += 1
        return str(self.events)

    @initialize(standby=st.booleans())
    def begin(self, standby: bool) -> None:
        self.world = World(standby=standby)

    @rule(change=st.sampled_from(CHANGES))
    def commit(self, change: tuple[str | None, Keys]) -> None:
        table, keys = change
        self.world.commit(self.name(), table, keys, affected(table, keys))

    @precondition(lambda self: self.world.unheard)
    @rule()
    def hear(self) -> None:
        self.world.hear(next(iter(self.world.unheard)))  # in commit order

    @rule()
    def send(self) -> None:
        self.world.send(self.name())

    @precondition(lambda self: self.world.requests)
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        self.world.answer(data.draw(st.sampled_from(sorted(self.world.requests))))

    @precondition(lambda self: self.world.replayed < self.world.wal)
    @rule()
    def replay(self) -> None:
        self.world.replay()

    @precondition(lambda self: self.world.standby)
    @rule()
    def learn_ahead(self) -> None:
        """The next read's position, learnt before it begins (its connection's last read)."""
        self.ahead = self.world.replayed

    @rule(key=st.sampled_from(KEYS))
    def start(self, key: Key) -> None:
        name = self.name()
        self.world.start(name, key)
        if self.ahead is not None:
            self.world.learnt[name], self.ahead = self.ahead, None

    def unplaced(self) -> list[str]:
        """The reads that have not learnt a position yet."""
        return sorted(
            name
            for name, read in self.world.reads.items()
            if read.value is None and name not in self.world.learnt
        )

    @precondition(lambda self: self.world.standby and self.unplaced())
    @rule(data=st.data())
    def position(self, data: st.DataObject) -> None:
        self.world.position(data.draw(st.sampled_from(self.unplaced())))

    def ready(self) -> list[str]:
        """The reads that may take their snapshot now."""
        return sorted(
            name
            for name, read in self.world.reads.items()
            if read.value is None and (name in self.world.learnt or not self.world.standby)
        )

    @precondition(lambda self: self.ready())
    @rule(data=st.data())
    def execute(self, data: st.DataObject) -> None:
        self.world.execute(data.draw(st.sampled_from(self.ready())))

    @precondition(lambda self: any(r.value is not None for r in self.world.reads.values()))
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        executed = sorted(name for name, read in self.world.reads.items() if read.value is not None)
        self.world.finish(data.draw(st.sampled_from(executed)))

    @precondition(lambda self: self.world.listening)
    @rule()
    def lose(self) -> None:
        self.world.lose()

    @precondition(lambda self: not self.world.listening)
    @rule()
    def relisten(self) -> None:
        self.world.relisten()

    @precondition(lambda self: self.world.rejoining is not None)
    @rule()
    def come_back(self) -> None:
        self.world.come_back()

    @invariant()
    def nothing_stale_is_held(self) -> None:
        assert self.world.stale() == []

    def teardown(self) -> None:
        if hasattr(self, "world"):
            assert self.world.converge() == []


TheCacheAgainstTheDatabase.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_any_sequence_of_events_keeps_the_cache_honest_and_storing = TheCacheAgainstTheDatabase.TestCase
