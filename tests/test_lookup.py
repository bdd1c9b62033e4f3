"""PricingLookup: one-round-trip reads, batches, the cache kept honest by NOTIFY, retries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import FrozenInstanceError, replace
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pricing_store import (
    BrandGroupRepository,
    InvalidValueError,
    ModelRepository,
    PriceReference,
    PricingLookup,
)
from pricing_store.lookup.listener import HEARTBEATS, RECONNECT_DELAYS
from tests.factories import brand_group, model
from tests.helpers import Counted, eventually
from tests.provision import asyncpg_dsn

# A committed change is heard, and what it changed evicted, this soon on loopback.
HEARD_WITHIN = 0.5


@pytest.fixture
async def stored(session_factory: async_sessionmaker[AsyncSession]) -> None:
    """Levi's jeans (with 501 and Big E) and Nike sneakers, committed."""
    async with session_factory.begin() as writer:
        await BrandGroupRepository(writer).bulk_upsert(
            [
                brand_group(base_price="25.00", expected_origins=["USA", "Mexico"]),
                brand_group("Nike", "sneakers", base_price=60, condition_sensitivity="1.3"),
            ]
        )
        await ModelRepository(writer).bulk_upsert(
            [
                model(name="501", coefficient="1.4"),
                model(name="Big E", coefficient="2.5", expected_features=["selvedge"]),
            ]
        )


@pytest.fixture
async def raw(admin_engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A connection of another client, for changes the lookup did not make."""
    connection = await asyncpg.connect(asyncpg_dsn(admin_engine.url))
    yield connection
    await connection.close()


@pytest.mark.usefixtures("stored")
async def test_get_returns_the_brand_group_and_the_model(engine: AsyncEngine) -> None:
    async with PricingLookup(engine) as lookup:
        with_model = await lookup.get("Levi's", "jeans", "Big E")
        without_model = await lookup.get(" Levi's", "jeans ")
        unknown_model = await lookup.get("Levi's", "jeans", "Type III")
        unknown = await lookup.get("Levi's", "skirts", "501")

    assert with_model == PriceReference(
        brand="Levi's",
        group_name="jeans",
        base_price=Decimal("25.00"),
        condition_sensitivity=Decimal("1.00"),
        expected_origins=("USA", "Mexico"),
        expected_decades=(),
        expected_trends=(),
        model="Big E",
        coefficient=Decimal("2.50"),
        expected_features=("selvedge",),
        model_found=True,
    )
    assert without_model is not None
    assert without_model == replace(
        with_model, model=None, coefficient=Decimal("1.00"), expected_features=(), model_found=False
    )
    assert unknown_model is not None
    assert (unknown_model.model, unknown_model.model_found) == ("Type III", False)
    assert unknown_model.coefficient == Decimal("1.00")
    assert unknown is None
    assert len({with_model, without_model}) == 2  # hashable
    assert type(with_model) is PriceReference
    with pytest.raises(FrozenInstanceError):
        with_model.base_price = Decimal("1.00")  # type: ignore[misc]


async def test_list_elements_come_back_exactly(
    session_factory: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    awkward = ['say "hi"', "back\\slash", "new\nline", "Łódź 日本", "line\u2028end"]
    async with session_factory.begin() as writer:
        await BrandGroupRepository(writer).upsert(brand_group(expected_trends=awkward))
        await ModelRepository(writer).upsert(model(name="501", expected_features=awkward[::-1]))

    async with PricingLookup(engine) as lookup:
        one = await lookup.get("Levi's", "jeans", "501")
        many = await lookup.get_many([("Levi's", "jeans", "501")])

    assert one is not None
    assert one.expected_trends == tuple(awkward)
    assert one.expected_features == tuple(awkward[::-1])
    assert one.expected_origins == ()
    assert many == {("Levi's", "jeans", "501"): one}


@pytest.mark.usefixtures("stored")
async def test_get_many_answers_every_key_as_passed(engine: AsyncEngine) -> None:
    keys: list[Any] = [
        ("Levi's", "jeans", "501"),
        (" Levi's", "jeans", "501"),
        ("Nike", "sneakers"),
        ("Nike", "sneakers", None),
        ("Zara", "dresses", None),
        ("Levi's", "jeans", "501"),
    ]
    async with PricingLookup(engine) as lookup:
        found = await lookup.get_many(keys)

    assert set(found) == set(keys)
    first = found[("Levi's", "jeans", "501")]
    assert first is not None
    assert first.coefficient == Decimal("1.40")
    assert found[(" Levi's", "jeans", "501")] == first
    nike = found[("Nike", "sneakers")]
    assert nike is not None
    assert nike.base_price == Decimal("60.00")
    assert found[("Nike", "sneakers", None)] == nike
    assert found[("Zara", "dresses", None)] is None


@pytest.mark.usefixtures("stored")
async def test_get_many_reads_each_reference_as_get_does(engine: AsyncEngine) -> None:
    keys = [
        ("Levi's", "jeans", "Big E"),
        ("Levi's", "jeans", "Type III"),
        ("Levi's", "jeans", None),
        ("Nike", "sneakers", None),
    ]
    async with PricingLookup(engine) as lookup:
        one_by_one = [await lookup.get(*key) for key in keys]
        found = await lookup.get_many(keys)

    assert [found[key] for key in keys] == one_by_one
    unknown_model = found[("Levi's", "jeans", "Type III")]
    assert unknown_model is not None
    # The column's default at the column's scale, as a stored coefficient reads.
    assert (str(unknown_model.coefficient), unknown_model.expected_features) == ("1.00", ())


@pytest.mark.usefixtures("stored")
async def test_get_and_get_many_are_one_round_trip(engine: AsyncEngine) -> None:
    async with Counted(engine) as lookup:
        await lookup.get("Levi's", "jeans", "501")
        await asyncio.sleep(0)
        assert len(lookup.sent) == 1
        await lookup.get_many([("Levi's", "jeans", str(number)) for number in range(50)])
        await asyncio.sleep(0)
        assert len(lookup.sent) == 2


async def test_bad_keys_are_rejected(engine: AsyncEngine) -> None:
    async with PricingLookup(engine) as lookup:
        with pytest.raises(InvalidValueError, match=r"^brand: must not be empty"):
            await lookup.get(" ", "jeans")
        with pytest.raises(InvalidValueError, match=r"^keys\[1\]\.model: .*NUL"):
            await lookup.get_many([("a", "b"), ("a", "b", "c\x00")])
        with pytest.raises(InvalidValueError, match=r"^keys\[0\]: must be a \(brand, group"):
            await lookup.get_many(["Levi's jeans"])  # type: ignore[list-item]
        # Unhashable keys and parts get the same clear error as any other bad key.
        with pytest.raises(InvalidValueError, match=r"^keys\[1\]: must be a \(brand, group"):
            await lookup.get_many([("a", "b"), ["a", "b"]])  # type: ignore[list-item]
        with pytest.raises(InvalidValueError, match=r"^keys\[0\]\.group_name: must be a string"):
            await lookup.get_many([("a", ["b"])])  # type: ignore[list-item]
        with pytest.raises(InvalidValueError, match=r"^brand: must be a string, not list"):
            await lookup.get(["a"], "b")  # type: ignore[arg-type]
        with pytest.raises(InvalidValueError, match=r"^keys\[0\]\.model: .*lone surrogate"):
            await lookup.get_many([("a", "b", "501 \udc00")])
    with pytest.raises(InvalidValueError, match=r"^cache_size: must not be negative"):
        PricingLookup(engine, cache_size=-1)


@pytest.mark.usefixtures("stored")
async def test_a_session_factory_will_do(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with PricingLookup(session_factory) as lookup:
        reference = await lookup.get("Nike", "sneakers")

    assert reference is not None
    assert reference.condition_sensitivity == Decimal("1.30")


@pytest.mark.usefixtures("stored")
async def test_cached_lookups_see_another_clients_commit_within_half_a_second(
    engine: AsyncEngine, raw: asyncpg.Connection
) -> None:
    async with PricingLookup(engine, cache_size=100) as lookup:
        before = await lookup.get("Levi's", "jeans", "501")
        assert before is not None
        assert await lookup.get("Levi's", "jeans", "501") is before  # served from the cache

        await raw.execute("UPDATE public.models SET coefficient = 1.6 WHERE model = '501'")

        async def updated() -> bool:
            reference = await lookup.get("Levi's", "jeans", "501")
            return reference is not None and reference.coefficient == Decimal("1.60")

        assert await eventually(updated, HEARD_WITHIN) < HEARD_WITHIN

        await raw.execute("TRUNCATE public.models")

        async def truncated() -> bool:
            reference = await lookup.get("Levi's", "jeans", "501")
            return reference is not None and not reference.model_found

        assert await eventually(truncated, HEARD_WITHIN) < HEARD_WITHIN


async def test_a_bulk_load_sends_one_notification(
    session_factory: async_sessionmaker[AsyncSession], raw: asyncpg.Connection
) -> None:
    received: list[str] = []
    await raw.add_listener("pricing_store_changes", lambda *args: received.append(args[-1]))

    async with session_factory.begin() as writer:
        await BrandGroupRepository(writer).bulk_upsert(
            brand_group(f"Brand {number}") for number in range(500)
        )
        await writer.execute(text("UPDATE public.brand_groups SET base_price = 26"))

    await eventually(lambda: asyncio.sleep(0, bool(received)), HEARD_WITHIN)
    await asyncio.sleep(0.1)
    # The bulk load's insert and the update each name too many keys: "the whole table", the
    # same payload twice in one transaction, which PostgreSQL delivers once.
    assert [json.loads(payload)["k"] for payload in received] == [None]


async def listener_pid(raw: asyncpg.Connection) -> int:
    """The lookup's listening connection here: its last statement LISTEN, or a heartbeat."""
    rows = await raw.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'pricing_store lookup' "
        "AND (query LIKE 'LISTEN%' OR query = 'SELECT 1')"
    )
    assert len(rows) == 1
    pid: int = rows[0]["pid"]
    return pid


async def nike_costs(lookup: PricingLookup, price: str) -> bool:
    reference = await lookup.get("Nike", "sneakers")
    return reference is not None and reference.base_price == Decimal(price)


@pytest.mark.usefixtures("stored")
async def test_the_cache_is_bypassed_while_the_listener_is_down(
    engine: AsyncEngine, raw: asyncpg.Connection
) -> None:
    """The server closes the listening connection, and a change is made that nobody hears.

    The listener finds out at its next heartbeat, at most listen_timeout / HEARTBEATS s of
    silence away; from then on the cache is bypassed until it listens again, at the first
    retry, RECONNECT_DELAYS[0] s later; then changes are heard as before.
    """
    listen_timeout = 1.0
    noticed_within = listen_timeout / HEARTBEATS + 0.3  # the next heartbeat, and round trips
    async with PricingLookup(engine, cache_size=100, listen_timeout=listen_timeout) as lookup:
        await lookup.get("Nike", "sneakers")
        await raw.execute("SELECT pg_terminate_backend($1)", await listener_pid(raw))
        await raw.execute("UPDATE public.brand_groups SET base_price = 70 WHERE brand = 'Nike'")

        assert await eventually(lambda: nike_costs(lookup, "70.00"), noticed_within) < (
            noticed_within
        )

        async def listening_again() -> bool:
            return lookup.stats().listening

        await eventually(listening_again, RECONNECT_DELAYS[0] + HEARD_WITHIN)
        await raw.execute("UPDATE public.brand_groups SET base_price = 80 WHERE brand = 'Nike'")

        assert await eventually(lambda: nike_costs(lookup, "80.00"), HEARD_WITHIN) < HEARD_WITHIN
        assert lookup.stats().evictions["reconnect"] >= 1


@pytest.mark.usefixtures("stored")
async def test_a_listening_connection_the_server_closed_is_noticed_at_once(
    engine: AsyncEngine, raw: asyncpg.Connection
) -> None:
    """asyncpg knows at once that the server closed it; no heartbeat need be waited for."""
    async with PricingLookup(engine, cache_size=100, listen_timeout=3600) as lookup:
        await lookup.get("Nike", "sneakers")
        await raw.execute("SELECT pg_terminate_backend($1)", await listener_pid(raw))
        await raw.execute("UPDATE public.brand_groups SET base_price = 70 WHERE brand = 'Nike'")

        assert await eventually(lambda: nike_costs(lookup, "70.00"), HEARD_WITHIN) < HEARD_WITHIN


@pytest.mark.usefixtures("stored")
async def test_reads_survive_connections_the_server_closed(
    engine: AsyncEngine, raw: asyncpg.Connection
) -> None:
    async with PricingLookup(engine, pool_size=3) as lookup:
        await asyncio.gather(*(lookup.get("Nike", "sneakers") for _ in range(3)))
        terminated = await raw.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() "
            "AND application_name = 'pricing_store lookup' AND state = 'idle' "
            "AND query NOT LIKE 'LISTEN%'"
        )
        assert terminated >= 1

        references = await asyncio.gather(*(lookup.get("Nike", "sneakers") for _ in range(3)))

    assert all(reference is not None for reference in references)


async def test_the_cache_holds_at_most_cache_size_entries(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    async with session_factory.begin() as writer:
        await BrandGroupRepository(writer).bulk_upsert(
            brand_group(f"Brand {number}") for number in range(20)
        )
    async with PricingLookup(engine, cache_size=5) as lookup:
        for number in range(20):
            await lookup.get(f"Brand {number}", "jeans")
        cache = lookup._cache
        assert cache is not None
        assert len(cache.entries) == 5
