"""The cache's own logic, without a database: LRU order, eviction by key, tokens, stats."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from pricing_store.lookup.cache import Change, ReferenceCache
from pricing_store.lookup.keys import CanonicalKeys, Key
from pricing_store.lookup.notifications import MAX_PAYLOAD, parse_change
from pricing_store.lookup.stats import LookupStats

GROUP: Key = ("Levi's", "jeans", None)
MODEL_501: Key = ("Levi's", "jeans", "501")
MODEL_505: Key = ("Levi's", "jeans", "505")
OTHER: Key = ("Nike", "sneakers", None)
ALL = (GROUP, MODEL_501, MODEL_505, OTHER)


def active(size: int = 10, *, tracks_positions: bool = False) -> ReferenceCache:
    cache = ReferenceCache(size, tracks_positions=tracks_positions)
    cache.back()
    return cache


def put(cache: ReferenceCache, key: Key, value: object = "value") -> bool:
    return cache.put(key, key, value, cache.token(key))


def test_the_least_recently_used_entry_goes_first() -> None:
    cache = active(size=2)
    put(cache, GROUP)
    put(cache, OTHER)
    cache.notes.append(GROUP)  # a hit: GROUP is now the most recent
    put(cache, MODEL_501)
    assert set(cache.entries) == {GROUP, MODEL_501}
    assert cache.evictions["size"] == 1


class Named:
    """A value that names its key, as a PriceReference does."""

    def __init__(self, key: Key) -> None:
        self.key = key


def test_the_order_and_the_hit_count_stay_exact_over_many_more_hits_than_entries() -> None:
    cache = ReferenceCache(3, key_of=lambda value: value.key)
    cache.back()
    values = {key: Named(key) for key in (GROUP, MODEL_501, OTHER)}
    for key, value in values.items():
        put(cache, key, value)
    # MODEL_501 is never hit; GROUP once, then OTHER thousands of times: MODEL_501 goes.
    cache.notes.append(values[GROUP])
    for _ in range(10_000):
        cache.notes.append(values[OTHER])
    cache.notes.append(("Levi's", "jeans", None))  # an unknown key's hit notes the key itself
    assert cache.hits == 10_002
    put(cache, MODEL_505)
    assert list(cache.entries) == [OTHER, GROUP, MODEL_505]
    assert cache.hits == 10_002  # counted once, when stored and when reported


def test_a_brand_group_change_evicts_its_models_too_and_a_model_change_only_itself() -> None:
    cache = active()
    for key in ALL:
        put(cache, key)
    cache.changed("models", [("Levi's", "jeans", "501")])
    assert set(cache.entries) == {GROUP, MODEL_505, OTHER}
    cache.changed("brand_groups", [GROUP[:2]])
    assert set(cache.entries) == {OTHER}
    assert cache.evictions["key"] == 3
    assert cache.notifications == 2


def test_a_change_to_the_whole_models_table_keeps_the_entries_without_a_model() -> None:
    cache = active()
    for key in ALL:
        put(cache, key)
    cache.changed("models", None)
    assert set(cache.entries) == {GROUP, OTHER}
    assert cache.evictions["table"] == 2


def test_a_read_that_overlapped_a_change_is_not_stored() -> None:
    cache = active()
    token = cache.token(GROUP)  # the read begins
    cache.changed("brand_groups", [GROUP[:2]])  # a change to its key arrives meanwhile
    assert not cache.put(GROUP, GROUP, "stale", token)
    assert GROUP not in cache.entries
    token = cache.token(OTHER)
    cache.changed("brand_groups", None)  # or to the whole table
    assert not cache.put(OTHER, OTHER, "stale", token)
    assert cache.entries == {}


def test_an_inactive_cache_holds_nothing() -> None:
    cache = ReferenceCache(10)
    assert not put(cache, GROUP)
    assert cache.entries == {}


def test_a_read_under_way_when_the_listener_is_lost_is_not_stored_even_once_it_is_back() -> None:
    cache = active()
    token = cache.token(GROUP)
    cache.lost()
    assert not cache.put(GROUP, GROUP, "read while nobody listened", token)
    cache.back()
    assert not cache.put(GROUP, GROUP, "read while nobody listened", token)
    assert put(cache, GROUP, "read since")
    assert cache.entries == {GROUP: "read since"}


def test_a_standby_value_is_stored_only_once_it_replayed_the_notified_change() -> None:
    cache = active(tracks_positions=True)
    cache.changed("brand_groups", [GROUP[:2]])
    request = cache.position_request()
    assert request is not None
    assert not cache.put(GROUP, GROUP, "unplaced", cache.token(GROUP), replayed=500)
    cache.position_read(request, 100)
    assert cache.position_request() is None
    assert not cache.put(GROUP, GROUP, "old", cache.token(GROUP), replayed=50)
    assert GROUP not in cache.entries
    assert cache.put(GROUP, GROUP, "new", cache.token(GROUP), replayed=150)
    assert cache.entries[GROUP] == "new"
    assert cache.put(OTHER, OTHER, "any", cache.token(OTHER), replayed=1)  # nothing notified
    assert OTHER in cache.entries


def test_a_position_asked_for_before_a_change_was_heard_does_not_place_that_change() -> None:
    cache = active(tracks_positions=True)
    cache.changed("models", [("Levi's", "jeans", "501")])
    first = cache.position_request()
    assert first is not None
    cache.changed("models", [("Levi's", "jeans", "505")])
    cache.position_read(first, 100)
    assert not cache.put(MODEL_505, MODEL_505, "v", cache.token(MODEL_505), replayed=100)
    second = cache.position_request()
    assert second is not None
    cache.position_read(second, 200)
    assert not cache.put(MODEL_505, MODEL_505, "v", cache.token(MODEL_505), replayed=100)
    assert cache.put(MODEL_505, MODEL_505, "v", cache.token(MODEL_505), replayed=200)


def test_a_standby_back_from_an_outage_needs_the_position_read_when_it_came_back() -> None:
    cache = active(tracks_positions=True)
    cache.lost()
    cache.back(position=300)
    assert cache.position_request() is None
    assert not cache.put(OTHER, OTHER, "old", cache.token(OTHER), replayed=299)
    assert cache.put(OTHER, OTHER, "new", cache.token(OTHER), replayed=300)


def test_the_primary_never_asks_for_a_position() -> None:
    cache = active()
    cache.changed("brand_groups", [GROUP[:2]])
    cache.changed(None, None)
    assert cache.position_request() is None
    assert put(cache, GROUP)


def test_losing_the_listener_empties_the_cache_and_counts_under_reconnect() -> None:
    cache = active()
    put(cache, GROUP)
    put(cache, OTHER)
    cache.lost()
    assert cache.entries == {}
    assert not cache.active
    assert cache.evictions["reconnect"] == 2
    cache.back()
    assert cache.active
    assert cache.entries == {}


def test_every_spelling_finds_one_canonical_key_and_only_that_is_kept() -> None:
    keys = CanonicalKeys(size=10)
    assert keys(" Levi's ", "jeans", None) == GROUP
    assert keys("Levi's", "jeans", None) == GROUP
    assert list(keys._known) == [GROUP]  # the padded spelling was not kept


def stats(hits: int, misses: int) -> LookupStats:
    return LookupStats(
        hits=hits,
        misses=misses,
        entries=0,
        evictions={},
        notifications=0,
        listening=True,
        generations_run=0,
        generations_failed=0,
        generations_in_flight=0,
    )


def test_the_hit_rate_is_hits_over_every_lookup() -> None:
    assert stats(3, 1).hit_rate == 0.75
    assert stats(0, 0).hit_rate == 0.0


def payload(table: object, keys: object) -> str:
    return json.dumps({"t": table, "k": keys})


@pytest.mark.parametrize(
    ("sent", "change"),
    [
        (payload("brand_groups", [["Levi's", "jeans"]]), ("brand_groups", [("Levi's", "jeans")])),
        (
            payload("models", [["a", "b", "c"], ["d", "e", "f"]]),
            ("models", [("a", "b", "c"), ("d", "e", "f")]),
        ),
        (payload("models", []), ("models", [])),
    ],
)
def test_a_well_formed_notification_names_its_table_and_keys(sent: str, change: Change) -> None:
    assert parse_change(sent) == change


MALFORMED = {
    "the oldest trigger's bare brand_groups": ("brand_groups", ("brand_groups", None)),
    "the oldest trigger's bare models": ("models", ("models", None)),
    "too many keys to name": (payload("models", None), ("models", None)),
    "not JSON": ("{'t': 'models'", (None, None)),
    "empty": ("", (None, None)),
    "a bare table name padded": (" models", (None, None)),
    "a JSON string": ('"models"', (None, None)),
    "a JSON list": ('["models", []]', (None, None)),
    "JSON null": ("null", (None, None)),
    "a number too long to convert": ("1" * 5000, (None, None)),
    "no keys": ('{"t": "models"}', (None, None)),
    "no table": ('{"k": []}', (None, None)),
    "an unknown table": (payload("prices", [["a", "b"]]), (None, None)),
    "a table that is not a string": (payload(["models"], []), (None, None)),
    "a table that is a number": (payload(1, []), (None, None)),
    "keys that are not a list": (payload("models", "a,b,c"), ("models", None)),
    "a key that is not a list": (payload("models", ["a"]), ("models", None)),
    "a model key with two parts": (payload("models", [["a", "b"]]), ("models", None)),
    "a group key with three parts": (
        payload("brand_groups", [["a", "b", "c"]]),
        ("brand_groups", None),
    ),
    "a part that is a number": (payload("models", [["a", "b", 501]]), ("models", None)),
    "a part that is null": (payload("models", [["a", "b", None]]), ("models", None)),
    "one bad key among good ones": (
        payload("brand_groups", [["a", "b"], ["c"]]),
        ("brand_groups", None),
    ),
    "longer than PostgreSQL sends": (
        payload("models", [["a", "b", "c" * 100]] * (MAX_PAYLOAD // 100)),
        (None, None),
    ),
}


@pytest.mark.parametrize(("sent", "change"), list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_notification_changes_the_whole_table_instead_of_raising(
    sent: str, change: Change
) -> None:
    assert parse_change(sent) == change


def test_a_deeply_nested_notification_changes_the_whole_table_instead_of_raising() -> None:
    sent = "[" * 3000 + "]" * 3000
    assert len(sent) <= MAX_PAYLOAD
    assert parse_change(sent) == (None, None)


parts = st.one_of(st.sampled_from(["Levi's", "jeans", "501", "505", "Nike"]), st.text(max_size=3))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
payloads = st.one_of(
    st.text(),
    st.sampled_from(["brand_groups", "models", "", "{}", "[]", "null"]),
    json_values.map(json.dumps),
    st.builds(
        payload,
        st.one_of(st.sampled_from(["brand_groups", "models", "prices"]), json_values),
        st.one_of(
            st.lists(st.lists(st.one_of(parts, st.integers(), st.none()), max_size=4), max_size=3),
            json_values,
        ),
    ),
)


@given(payloads)
def test_any_payload_is_heard_without_raising_and_evicts_whatever_it_may_have_changed(
    sent: str,
) -> None:
    cache = active(tracks_positions=True)
    for key in ALL:
        assert cache.put(key, key, "value", cache.token(key), replayed=0)
    table, keys = parse_change(sent)
    cache.changed(table, keys)
    assert cache.notifications == 1
    if keys is None:
        if table == "models":
            assert set(cache.entries) == {GROUP, OTHER}
        else:
            assert cache.entries == {}
        assert cache.position_request() is not None
        return
    for named in keys:
        if table == "brand_groups":
            assert not any(key[:2] == named for key in cache.entries)
        else:
            assert named not in cache.entries
    if keys:
        assert cache.position_request() is not None
