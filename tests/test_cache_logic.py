"""The cache's own logic, without a database: LRU order, eviction by key, tokens, stats."""

from __future__ import annotations

from pricing_store.lookup.cache import ReferenceCache
from pricing_store.lookup.keys import CanonicalKeys, Key
from pricing_store.lookup.stats import LookupStats

GROUP: Key = ("Levi's", "jeans", None)
MODEL_501: Key = ("Levi's", "jeans", "501")
MODEL_505: Key = ("Levi's", "jeans", "505")
OTHER: Key = ("Nike", "sneakers", None)


def active(size: int = 10) -> ReferenceCache:
    cache = ReferenceCache(size)
    cache.active = True
    return cache


def put(cache: ReferenceCache, key: Key, value: object = "value") -> None:
    cache.put(key, key, value, cache.token(key))


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
    cache.active = True
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
    for key in (GROUP, MODEL_501, MODEL_505, OTHER):
        put(cache, key)
    cache.evict_keys("models", [("Levi's", "jeans", "501")])
    assert set(cache.entries) == {GROUP, MODEL_505, OTHER}
    cache.evict_keys("brand_groups", [GROUP[:2]])
    assert set(cache.entries) == {OTHER}
    assert cache.evictions["key"] == 3


def test_a_read_that_overlapped_a_change_is_not_stored() -> None:
    cache = active()
    token = cache.token(GROUP)  # the read begins
    cache.evict_keys("brand_groups", [GROUP[:2]])  # a change to its key arrives meanwhile
    cache.put(GROUP, GROUP, "stale", token)
    assert GROUP not in cache.entries
    token = cache.token(OTHER)
    cache.evict_table("brand_groups")  # or to the whole table
    cache.put(OTHER, OTHER, "stale", token)
    assert cache.entries == {}


def test_an_inactive_cache_holds_nothing() -> None:
    cache = ReferenceCache(10)
    put(cache, GROUP)
    assert cache.entries == {}


def test_a_standby_value_is_stored_only_once_it_replayed_the_notified_change() -> None:
    cache = active()
    cache.need_position([GROUP[:2]], 100)
    cache.put(GROUP, GROUP, "old", cache.token(GROUP), replayed=50)
    assert GROUP not in cache.entries
    cache.put(GROUP, GROUP, "new", cache.token(GROUP), replayed=150)
    assert cache.entries[GROUP] == "new"
    cache.put(OTHER, OTHER, "any", cache.token(OTHER), replayed=1)  # nothing notified for it
    assert OTHER in cache.entries


def test_clearing_counts_under_its_cause() -> None:
    cache = active()
    put(cache, GROUP)
    put(cache, OTHER)
    cache.clear("reconnect")
    assert cache.entries == {}
    assert cache.evictions["reconnect"] == 2


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
