"""The cache: a change evicts what it changed, every spelling of it, and nothing else."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pricing_store import BrandGroupRepository, InvalidValueError, ModelRepository, PricingLookup
from tests.factories import brand_group, model
from tests.helpers import Counted, eventually
from tests.provision import asyncpg_dsn

GROUPS = 20
# A committed change is heard, and what it changed evicted, this soon on loopback.
HEARD_WITHIN = 0.5


@pytest.fixture
async def stored(session_factory: async_sessionmaker[AsyncSession]) -> None:
    """GROUPS Brand×Groups, each with models 501 and 505."""
    async with session_factory.begin() as writer:
        await BrandGroupRepository(writer).bulk_upsert(
            brand_group(f"Brand {number}") for number in range(GROUPS)
        )
        await ModelRepository(writer).bulk_upsert(
            model(f"Brand {number}", name=name)
            for number in range(GROUPS)
            for name in ("501", "505")
        )


@pytest.fixture
async def raw(admin_engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """Another client, writing raw SQL behind the lookup's back."""
    connection = await asyncpg.connect(asyncpg_dsn(admin_engine.url))
    yield connection
    await connection.close()


@pytest.fixture
async def lookup(engine: AsyncEngine) -> AsyncIterator[Counted]:
    async with Counted(engine, cache_size=1_000) as counted:
        counted.sent = []
        yield counted


async def reads(lookup: Counted) -> int:
    """How many statements the lookup has sent (its query logger runs a moment later)."""
    await asyncio.sleep(0)
    return len(lookup.sent)


async def heard(lookup: PricingLookup, notifications: int) -> None:
    """Until the lookup has heard this many notifications in all (HEARD_WITHIN at most)."""

    async def enough() -> bool:
        return lookup.stats().notifications >= notifications

    assert await eventually(enough, HEARD_WITHIN) < HEARD_WITHIN


async def base_price(lookup: PricingLookup, brand: str, model: str | None = None) -> Decimal | None:
    reference = await lookup.get(brand, "jeans", model)
    return None if reference is None else reference.base_price


@pytest.mark.usefixtures("stored")
async def test_writes_to_other_keys_leave_cached_keys_cached(
    lookup: Counted, raw: asyncpg.Connection
) -> None:
    for number in range(10):
        await lookup.get(f"Brand {number}", "jeans", "501")
    assert await reads(lookup) == 10

    for number in range(10, GROUPS):
        await raw.execute(
            "UPDATE public.brand_groups SET base_price = 30 WHERE brand = $1", f"Brand {number}"
        )
        await raw.execute(
            "UPDATE public.models SET coefficient = 2 WHERE brand = $1", f"Brand {number}"
        )
    await heard(lookup, 2 * (GROUPS - 10))
    for number in range(10):
        await lookup.get(f"Brand {number}", "jeans", "501")

    assert await reads(lookup) == 10, "cached keys were read again"
    stats = lookup.stats()
    assert (stats.hits, stats.misses, stats.entries) == (10, 10, 10)
    assert sum(stats.evictions.values()) == 0


@pytest.mark.usefixtures("stored")
async def test_a_change_evicts_every_spelling_of_its_key(
    lookup: Counted, raw: asyncpg.Connection
) -> None:
    spellings = ["Brand 1", " Brand 1", "Brand 1 ", "Brand 1\u0020"]
    for spelling in spellings:
        assert await base_price(lookup, spelling) == Decimal("25.00")
    await raw.execute("UPDATE public.brand_groups SET base_price = 31 WHERE brand = 'Brand 1'")
    await heard(lookup, 1)

    assert [await base_price(lookup, spelling) for spelling in spellings] == [Decimal("31.00")] * 4
    # Every spelling shares the one entry of the canonical key.
    assert lookup.stats().evictions["key"] == 1
    assert lookup.stats().entries == 1


@pytest.mark.usefixtures("stored")
async def test_a_model_change_evicts_only_that_model(
    lookup: Counted, raw: asyncpg.Connection
) -> None:
    for name in ("501", "505", None):
        await lookup.get("Brand 2", "jeans", name)
    await raw.execute(
        "UPDATE public.models SET coefficient = 2.2 WHERE brand = 'Brand 2' AND model = '501'"
    )
    await heard(lookup, 1)
    sent = await reads(lookup)

    changed = await lookup.get("Brand 2", "jeans", "501")
    await lookup.get("Brand 2", "jeans", "505")
    await lookup.get("Brand 2", "jeans")

    assert changed is not None
    assert changed.coefficient == Decimal("2.20")
    assert await reads(lookup) == sent + 1  # the other model and the Brand×Group were cached
    assert lookup.stats().evictions["key"] == 1


@pytest.mark.usefixtures("stored")
async def test_a_brand_group_change_evicts_its_entries_with_and_without_models(
    lookup: Counted, raw: asyncpg.Connection
) -> None:
    for name in ("501", "505", "Unknown", None):
        await lookup.get("Brand 3", "jeans", name)
    await lookup.get("Brand 4", "jeans")
    await raw.execute("UPDATE public.brand_groups SET base_price = 40 WHERE brand = 'Brand 3'")
    await heard(lookup, 1)

    assert {await base_price(lookup, "Brand 3", name) for name in ("501", "505", None)} == {
        Decimal("40.00")
    }
    assert lookup.stats().evictions["key"] == 4
    assert lookup.stats().entries == 4  # three read again, and Brand 4 untouched


async def test_every_kind_of_change_reaches_the_cache(
    session_factory: async_sessionmaker[AsyncSession], lookup: Counted, raw: asyncpg.Connection
) -> None:
    assert await lookup.get("Levi's", "jeans", "501") is None  # a miss, cached

    async with session_factory.begin() as writer:  # insert
        await BrandGroupRepository(writer).upsert(brand_group(base_price=25))

    async def priced(expected: Decimal | None, model_name: str | None = "501") -> bool:
        return await base_price(lookup, "Levi's", model_name) == expected

    assert await eventually(lambda: priced(Decimal("25.00")), HEARD_WITHIN) < HEARD_WITHIN

    await raw.execute("UPDATE public.brand_groups SET base_price = 26")  # update
    assert await eventually(lambda: priced(Decimal("26.00")), HEARD_WITHIN) < HEARD_WITHIN

    async with session_factory.begin() as writer:  # a model row alone
        await ModelRepository(writer).upsert(model(coefficient="1.7"))

    async def coefficient_is(expected: str) -> bool:
        reference = await lookup.get("Levi's", "jeans", "501")
        return reference is not None and reference.coefficient == Decimal(expected)

    assert await eventually(lambda: coefficient_is("1.70"), HEARD_WITHIN) < HEARD_WITHIN

    await raw.execute("DELETE FROM public.models")  # delete
    assert await eventually(lambda: coefficient_is("1.00"), HEARD_WITHIN) < HEARD_WITHIN

    async with session_factory.begin() as writer:  # a bulk load of 20,000 rows
        await BrandGroupRepository(writer).bulk_upsert(
            brand_group(f"Bulk {number}", base_price=27) if number else brand_group(base_price=27)
            for number in range(20_000)
        )
    assert await eventually(lambda: priced(Decimal("27.00")), HEARD_WITHIN) < HEARD_WITHIN

    await raw.execute("TRUNCATE public.brand_groups")  # truncate
    assert await eventually(lambda: priced(None), HEARD_WITHIN) < HEARD_WITHIN
    assert lookup.stats().evictions["table"] >= 1


async def test_writers_of_different_keys_never_wait_for_each_other(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as first, session_factory() as second:
        # Each holds its transaction open across the other's writes, in opposite order.
        await first.begin()
        await second.begin()
        await BrandGroupRepository(first).upsert(brand_group("A"))
        await asyncio.wait_for(BrandGroupRepository(second).upsert(brand_group("B")), 1)
        await asyncio.wait_for(ModelRepository(second).upsert(model("A")), 1)
        await asyncio.wait_for(ModelRepository(first).upsert(model("B")), 1)
        await first.commit()
        await second.commit()


async def test_payloads_name_keys_and_stay_under_the_limit(
    session_factory: async_sessionmaker[AsyncSession], raw: asyncpg.Connection
) -> None:
    received: list[dict[str, Any]] = []
    await raw.add_listener(
        "pricing_store_changes", lambda *args: received.append(json.loads(args[-1]))
    )
    payload_sizes: list[int] = []
    await raw.add_listener(
        "pricing_store_changes", lambda *args: payload_sizes.append(len(args[-1].encode()))
    )

    async with session_factory.begin() as writer:
        await BrandGroupRepository(writer).bulk_upsert(
            brand_group(f"Brand {number}") for number in range(3)
        )
    long_brand = "B" * 99
    async with session_factory.begin() as writer:  # many long keys: over 8,000 bytes named
        await BrandGroupRepository(writer).bulk_upsert(
            brand_group(f"{long_brand}{number % 10}", f"group {number}") for number in range(150)
        )
    async with session_factory.begin() as writer:  # many keys
        await BrandGroupRepository(writer).bulk_upsert(
            brand_group(f"Many {number}") for number in range(500)
        )
    await eventually(lambda: asyncio.sleep(0, len(received) == 3), HEARD_WITHIN)

    assert [message["t"] for message in received] == ["brand_groups"] * 3
    assert sorted(map(tuple, received[0]["k"])) == [(f"Brand {n}", "jeans") for n in range(3)]
    assert received[1]["k"] is None
    assert received[2]["k"] is None
    assert all(set(message) == {"t", "k"} for message in received)  # no number: no counter
    assert max(payload_sizes) < 8000


@pytest.mark.usefixtures("stored")
async def test_eviction_is_least_recently_used(engine: AsyncEngine) -> None:
    async with Counted(engine, cache_size=3) as lookup:
        lookup.sent = []
        for number in (0, 1, 2, 0, 3):  # Brand 0 used again before Brand 3 arrives
            await lookup.get(f"Brand {number}", "jeans")
        sent = await reads(lookup)
        await lookup.get("Brand 0", "jeans")
        assert await reads(lookup) == sent  # kept: it was used recently
        await lookup.get("Brand 1", "jeans")
        assert await reads(lookup) == sent + 1  # the least recently used one went
        assert lookup.stats().evictions["size"] == 2


@pytest.mark.usefixtures("stored")
async def test_stats_are_a_snapshot(lookup: Counted) -> None:
    await lookup.get("Brand 0", "jeans")
    await lookup.get("Brand 0", "jeans")
    await lookup.get_many([("Brand 0", "jeans"), ("Brand 1", "jeans")])
    stats = lookup.stats()

    assert (stats.hits, stats.misses, stats.entries) == (2, 2, 2)
    assert stats.hit_rate == 0.5
    assert stats.listening
    assert set(stats.evictions) == {"key", "table", "reconnect", "size"}
    assert (stats.generations_run, stats.generations_failed, stats.generations_in_flight) == (
        0,
        0,
        0,
    )
    await lookup.get("Brand 1", "jeans")
    assert stats.hits == 2  # a snapshot does not move


@pytest.mark.usefixtures("stored")
async def test_unknown_keys_and_other_spellings_are_hits_too(lookup: Counted) -> None:
    assert await lookup.get("Nobody", "jeans") is None
    assert await base_price(lookup, "Brand 1") == Decimal("25.00")
    sent = await reads(lookup)

    assert await lookup.get("Nobody", "jeans") is None  # cached as unknown
    assert await lookup.get(" Nobody ", "jeans") is None  # another spelling of it
    assert await base_price(lookup, "  Brand 1") == Decimal("25.00")
    with pytest.raises(InvalidValueError, match=r"^brand: must be a string, not list"):
        await lookup.get(["Brand 1"], "jeans")  # type: ignore[arg-type]

    assert await reads(lookup) == sent
    assert lookup.stats().hits == 3


def sized(prefix: str, filler: str, size: int) -> str:
    """`prefix` and as many `filler`s as fit, then padding: exactly `size` bytes (ASCII)."""
    text = prefix + filler * ((size - len(prefix)) // len(filler))
    return text + " " * (size - len(text))


def key_list(size: int) -> str:
    """A valid brand_groups payload naming Brand 1 and as many unknown keys as fit."""
    keys = [["Brand 1", "jeans"]]
    while len(json.dumps({"t": "brand_groups", "k": [*keys, ["Nobody 00000", "jeans"]]})) < size:
        keys.append([f"Nobody {len(keys):05}", "jeans"])
    return json.dumps({"t": "brand_groups", "k": keys})


# Payloads anyone may NOTIFY, and which cached entries they leave: the three below are
# Brand 1 and Brand 2 without a model, and Brand 3's model 501.
ALL_GONE: tuple[str, ...] = ()
MODELLESS = ("Brand 1", "Brand 2")
NOTIFIED: dict[str, tuple[str, tuple[str, ...]]] = {
    "not JSON": ("brand_groups changed: Brand 1", ALL_GONE),
    "JSON not an object": ("[1, 2, 3]", ALL_GONE),
    "JSON null": ("null", ALL_GONE),
    "an unknown table": (json.dumps({"t": "orders", "k": [["Brand 1", "jeans"]]}), ALL_GONE),
    "no table": (json.dumps({"k": [["Brand 1", "jeans"]]}), ALL_GONE),
    "a table that is no string": (json.dumps({"t": ["brand_groups"], "k": None}), ALL_GONE),
    "keys that are no list": (json.dumps({"t": "brand_groups", "k": "Brand 1"}), ALL_GONE),
    "a key too short": (json.dumps({"t": "brand_groups", "k": [["Brand 1"]]}), ALL_GONE),
    "a key part no string": (json.dumps({"t": "brand_groups", "k": [["Brand 1", 5]]}), ALL_GONE),
    "a model key too short": (json.dumps({"t": "models", "k": [["Brand 1", "jeans"]]}), MODELLESS),
    "7,999 bytes cut short": (
        sized('{"t": "brand_groups", "k": [', '["Brand 1", "jeans"], ', 7999),
        ALL_GONE,
    ),
    "a number of 7,999 digits": ("1" * 7999, ALL_GONE),
    "arrays nested 7,999 deep": ("[" * 7999, ALL_GONE),
    "objects nested 1,333 deep": ('{"t": ' * 1333, ALL_GONE),
    "7,999 bytes of keys": (key_list(7999), ("Brand 2", "Brand 3 501")),
}


async def cache_three(lookup: Counted) -> None:
    for number in (1, 2):
        assert await base_price(lookup, f"Brand {number}") == Decimal("25.00")
    assert await base_price(lookup, "Brand 3", "501") == Decimal("25.00")
    assert lookup.stats().entries == 3


async def still_cached(lookup: Counted) -> tuple[str, ...]:
    """Which of the three `cache_three` cached are hits still (reading the others again)."""
    cached = []
    for brand, model_name in (("Brand 1", None), ("Brand 2", None), ("Brand 3", "501")):
        sent = await reads(lookup)
        await lookup.get(brand, "jeans", model_name)
        if await reads(lookup) == sent:
            cached.append(f"{brand} {model_name}" if model_name else brand)
    return tuple(cached)


@pytest.mark.usefixtures("stored")
@pytest.mark.parametrize(("payload", "left"), NOTIFIED.values(), ids=NOTIFIED.keys())
async def test_any_notification_leaves_the_listener_listening_and_evicts_what_it_may_name(
    lookup: Counted, raw: asyncpg.Connection, payload: str, left: tuple[str, ...]
) -> None:
    """Anyone may NOTIFY the channel: what cannot be read means "the whole table" (or both)."""
    assert len(payload.encode()) <= 7999
    await cache_three(lookup)
    await raw.execute("SELECT pg_notify('pricing_store_changes', $1)", payload)
    await heard(lookup, 1)

    assert lookup.stats().listening
    assert await still_cached(lookup) == left
    await raw.execute("UPDATE public.brand_groups SET base_price = 33 WHERE brand = 'Brand 2'")

    async def heard_after() -> bool:
        return await base_price(lookup, "Brand 2") == Decimal("33.00")

    assert await eventually(heard_after, HEARD_WITHIN) < HEARD_WITHIN
    assert lookup.stats().listening


class NoGenerator:
    """A generator that is never called: it only makes the generation settings count."""

    async def brand_group(self, brand: str, group: str) -> dict[str, object]:
        raise AssertionError("not called")

    async def model(self, brand: str, group: str, model: str) -> dict[str, object]:
        raise AssertionError("not called")


BAD_SETTINGS: dict[str, dict[str, Any]] = {
    "listen_timeout 1e-9": {"cache_size": 10, "listen_timeout": 1e-9},
    "listen_timeout over an hour": {"cache_size": 10, "listen_timeout": 3601},
    "listen_timeout NaN": {"cache_size": 10, "listen_timeout": float("nan")},
    "close_timeout 0": {"close_timeout": 0},
    "close_timeout infinite": {"close_timeout": float("inf")},
    "pool_timeout negative": {"pool_timeout": -1},
    "pool_timeout over an hour": {"pool_timeout": 3601},
    "lease_seconds 0.1": {"generator": NoGenerator(), "lease_seconds": 0.1},
    "lease_seconds over 10 minutes": {"generator": NoGenerator(), "lease_seconds": 601},
    "generation_timeout 1e9": {"generator": NoGenerator(), "generation_timeout": 1e9},
    "generation_timeout 0": {"generator": NoGenerator(), "generation_timeout": 0},
}


@pytest.mark.parametrize("options", BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_a_timeout_out_of_bounds_is_rejected_naming_it(
    engine: AsyncEngine, options: dict[str, Any]
) -> None:
    setting = next(name for name in options if name not in ("cache_size", "generator"))
    with pytest.raises(InvalidValueError, match=rf"^{setting}: must be "):
        PricingLookup(engine, **options)


@pytest.mark.parametrize(
    "options",
    [{"lease_seconds": 0.1}, {"generation_timeout": 1e9}],
    ids=["lease_seconds", "generation_timeout"],
)
def test_a_generation_setting_out_of_bounds_is_rejected_without_a_generator_too(
    engine: AsyncEngine, options: dict[str, Any]
) -> None:
    (setting,) = options
    with pytest.raises(InvalidValueError, match=rf"^{setting}: must be "):
        PricingLookup(engine, **options)
