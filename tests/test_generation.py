"""PricingLookup.get_or_generate: one generator call per missing key, nothing held meanwhile."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pricing_store import (
    BrandGroup,
    BrandGroupRepository,
    GenerationTimeoutError,
    InvalidValueError,
    PricingLookup,
    PricingStoreError,
    create_engine,
)
from pricing_store.lookup.leases import DEFAULT_LEASE_SECONDS as LEASE_SECONDS
from tests.factories import brand_group
from tests.helpers import ROOT
from tests.provision import asyncpg_dsn, url_text


class FakeLLM:
    """Answers after `seconds`, counting calls per key and how many run at once."""

    def __init__(self, seconds: float = 0.0, **values: Any) -> None:
        self.seconds = seconds
        self.values: dict[str, Any] = {"base_price": "30.00", **values}
        self.calls: dict[tuple[str, ...], int] = {}
        self.running = 0
        self.most_at_once = 0
        self.failure: BaseException | None = None

    async def _answer(self, key: tuple[str, ...], answer: Any) -> Any:
        self.calls[key] = self.calls.get(key, 0) + 1
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(self.seconds)
            if self.failure is not None:
                raise self.failure
            return answer
        finally:
            self.running -= 1

    async def brand_group(self, brand: str, group: str) -> Any:
        return await self._answer((brand, group), dict(self.values))

    async def model(self, brand: str, group: str, model: str) -> Any:
        return await self._answer((brand, group, model), {"coefficient": "2.50"})


@pytest.fixture
async def raw(admin_engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(asyncpg_dsn(admin_engine.url))
    yield connection
    await connection.execute("TRUNCATE public.pricing_store_generation_leases")
    await connection.close()


@pytest.mark.usefixtures("session_factory")
async def test_only_what_is_missing_is_generated_once(engine: AsyncEngine) -> None:
    llm = FakeLLM(expected_origins=["USA"])
    async with PricingLookup(engine, cache_size=100, generator=llm) as lookup:
        first = await lookup.get_or_generate(" Levi's", "jeans ")
        again = await lookup.get_or_generate("Levi's", "jeans")
        with_model = await lookup.get_or_generate("Levi's", "jeans", "501")
        stored = await lookup.get("Levi's", "jeans", "501")

    assert first.base_price == Decimal("30.00")
    assert first.expected_origins == ("USA",)
    assert again == first
    assert with_model.coefficient == Decimal("2.50")
    assert with_model.model_found
    assert stored == with_model
    assert llm.calls == {("Levi's", "jeans"): 1, ("Levi's", "jeans", "501"): 1}


@pytest.mark.usefixtures("session_factory")
async def test_a_herd_generates_each_key_once_holding_no_connection_meanwhile(
    engine: AsyncEngine, raw: asyncpg.Connection
) -> None:
    llm = FakeLLM(seconds=2.0)
    keys = [f"Brand {number}" for number in range(50)]
    seen_during: list[tuple[str, str]] = []
    samples_with_every_generator_running = 0

    async def sample(lookup: PricingLookup) -> None:
        nonlocal samples_with_every_generator_running
        # The lookup's own connections (it never draws from the engine's pool): reads, and
        # generation's checks and stores. Leases have a pool of their own, for renewals.
        connections = lookup._pool
        await asyncio.sleep(0.5)  # the generators are sleeping by now
        while llm.running:
            # A claim or a renewal runs for milliseconds; a transaction or statement kept
            # open across a 2 s generator call would stay for more than half a second.
            rows = await raw.fetch(
                "SELECT coalesce(application_name, ''), state FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND state <> 'idle' "
                "AND clock_timestamp() - coalesce(xact_start, query_start) > interval '0.5 s'"
            )
            seen_during.extend((row[0], row[1]) for row in rows)
            if llm.running == len(keys):  # every generator called, none returned: no store yet
                samples_with_every_generator_running += 1
                assert not connections._in_use, "a connection held while generators ran"
            await asyncio.sleep(0.1)

    async with PricingLookup(engine, generator=llm) as lookup:
        started = time.monotonic()
        sampler = asyncio.create_task(sample(lookup))
        references = await asyncio.gather(
            *(lookup.get_or_generate(keys[number % 50], "jeans") for number in range(200))
        )
        took = time.monotonic() - started
        await sampler

    assert [reference.brand for reference in references] == [keys[n % 50] for n in range(200)]
    assert set(llm.calls.values()) == {1}
    assert len(llm.calls) == 50
    assert took < 3.5, f"200 requests over 50 keys took {took:.1f} s with a 2 s generator"
    assert seen_during == [], "transactions held open while only the generators ran"
    assert samples_with_every_generator_running >= 5


@pytest.mark.usefixtures("session_factory")
async def test_max_generations_caps_the_calls_running_at_once(engine: AsyncEngine) -> None:
    llm = FakeLLM(seconds=0.2)
    async with PricingLookup(engine, generator=llm, max_generations=3, pool_size=2) as lookup:
        await asyncio.gather(*(lookup.get_or_generate(f"B{n}", "jeans") for n in range(12)))
        stats = lookup.stats()

    assert llm.most_at_once == 3
    assert len(llm.calls) == 12
    assert (stats.generations_run, stats.generations_failed) == (12, 0)
    assert stats.generations_in_flight == 0


@pytest.mark.usefixtures("session_factory")
async def test_a_failing_generator_reaches_every_waiter_stores_nothing_and_is_retried(
    engine: AsyncEngine,
) -> None:
    llm = FakeLLM(seconds=0.2)
    llm.failure = ConnectionResetError("the LLM hung up")
    async with PricingLookup(engine, cache_size=10, generator=llm) as lookup:
        outcomes = await asyncio.gather(
            *(lookup.get_or_generate("Levi's", "jeans") for _ in range(5)),
            return_exceptions=True,
        )
        assert all(outcome is llm.failure for outcome in outcomes)
        assert await lookup.get("Levi's", "jeans") is None
        assert lookup.stats().generations_failed == 1

        llm.failure = None
        reference = await lookup.get_or_generate("Levi's", "jeans")

    assert reference.base_price == Decimal("30.00")
    assert llm.calls == {("Levi's", "jeans"): 2}


@pytest.mark.usefixtures("session_factory")
async def test_callers_that_asked_before_an_instant_failure_all_get_it_from_one_call(
    engine: AsyncEngine,
) -> None:
    llm = FakeLLM(seconds=0.0)
    llm.failure = ConnectionResetError("the LLM hung up")
    async with PricingLookup(engine, generator=llm) as lookup:
        outcomes = await asyncio.gather(
            *(lookup.get_or_generate("Levi's", "jeans") for _ in range(5)),
            return_exceptions=True,
        )
    assert all(outcome is llm.failure for outcome in outcomes)
    assert llm.calls == {("Levi's", "jeans"): 1}


@pytest.mark.usefixtures("session_factory")
async def test_a_key_is_generated_once_while_a_writer_holds_its_row_past_a_lease(
    engine: AsyncEngine, raw: asyncpg.Connection
) -> None:
    llm = FakeLLM(seconds=0.1)
    holding = raw.transaction()
    await holding.start()
    # A writer inserts the key and keeps its transaction open: a store of the same key waits.
    await raw.execute(
        "INSERT INTO public.brand_groups (brand, group_name, base_price) "
        "VALUES ('Levi''s', 'jeans', 26)"
    )
    # One connection each: a store waiting on the row must not hold up lease renewal.
    async with (
        PricingLookup(engine, pool_size=1, generator=llm) as first,
        PricingLookup(engine, pool_size=1, generator=llm) as second,
    ):
        asking = [
            asyncio.create_task(lookup.get_or_generate("Levi's", "jeans"))
            for lookup in (first, second)
        ]
        await asyncio.sleep(LEASE_SECONDS + 2)  # longer than a lease lives unrenewed
        assert not any(task.done() for task in asking)
        await holding.rollback()  # the writer gives up: the generated row goes in
        references = await asyncio.gather(*asking)
    assert {reference.base_price for reference in references} == {Decimal("30.00")}
    assert llm.calls == {("Levi's", "jeans"): 1}


@pytest.mark.usefixtures("session_factory")
async def test_a_slow_generator_times_out_with_the_packages_error(engine: AsyncEngine) -> None:
    llm = FakeLLM(seconds=5.0)
    async with PricingLookup(engine, generator=llm, generation_timeout=0.2) as lookup:
        with pytest.raises(GenerationTimeoutError) as raised:
            await lookup.get_or_generate("Levi's", "jeans")
        assert await lookup.get("Levi's", "jeans") is None

    assert isinstance(raised.value, TimeoutError)
    assert isinstance(raised.value, PricingStoreError)
    assert str(raised.value) == 'generating brand group ("Levi\'s", "jeans") took longer than 0.2 s'


@pytest.mark.usefixtures("session_factory")
async def test_invalid_output_names_the_key_and_the_field(engine: AsyncEngine) -> None:
    async with PricingLookup(engine, generator=FakeLLM(base_price="900")) as lookup:
        with pytest.raises(InvalidValueError) as raised:
            await lookup.get_or_generate("Levi's", "jeans")
        assert await lookup.get("Levi's", "jeans") is None
    assert str(raised.value) == (
        'generated brand group ("Levi\'s", "jeans"): base_price: must be between 5.00 and 500.00'
    )

    async with PricingLookup(engine, generator=FakeLLM(brand="Wrangler")) as lookup:
        with pytest.raises(InvalidValueError, match=r"brand: 'Wrangler' is not the requested"):
            await lookup.get_or_generate("Levi's", "jeans")


@pytest.mark.usefixtures("session_factory")
async def test_a_generator_may_return_a_model_object(engine: AsyncEngine) -> None:
    class ObjectLLM(FakeLLM):
        async def brand_group(self, brand: str, group: str) -> Any:
            return BrandGroup(base_price=Decimal("12.50"), expected_trends=["y2k"])

    async with PricingLookup(engine, generator=ObjectLLM()) as lookup:
        reference = await lookup.get_or_generate("Levi's", "jeans")

    assert (reference.base_price, reference.expected_trends) == (Decimal("12.50"), ("y2k",))


async def test_a_row_stored_meanwhile_by_another_client_wins(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    llm = FakeLLM(seconds=0.5)
    async with PricingLookup(engine, cache_size=10, generator=llm) as lookup:
        generating = asyncio.create_task(lookup.get_or_generate("Levi's", "jeans"))
        await asyncio.sleep(0.2)
        async with session_factory.begin() as writer:
            await BrandGroupRepository(writer).upsert(brand_group(base_price=99))
        reference = await generating

    assert reference.base_price == Decimal("99.00")


def test_bad_generation_settings_are_rejected(engine: AsyncEngine) -> None:
    with pytest.raises(InvalidValueError, match=r"^generator: must have async methods"):
        PricingLookup(engine, generator=object())  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match=r"^generation_timeout: must be a positive"):
        PricingLookup(engine, generator=FakeLLM(), generation_timeout=0)
    with pytest.raises(InvalidValueError, match=r"^max_generations: must be at least 1"):
        PricingLookup(engine, generator=FakeLLM(), max_generations=0)


async def test_get_or_generate_needs_a_generator(engine: AsyncEngine) -> None:
    async with PricingLookup(engine) as lookup:
        with pytest.raises(InvalidValueError, match=r"^generator: get_or_generate needs"):
            await lookup.get_or_generate("Levi's", "jeans")


def start_worker(url: URL, calls: Path, seconds: float, *brands: str) -> subprocess.Popen[str]:
    """A service process asking for `brands` (see tests/generation_worker.py)."""
    arguments = [url_text(url), str(calls), str(seconds), *brands]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.generation_worker", *arguments],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def generator_calls(calls: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in calls.read_text().splitlines()]


@pytest.mark.usefixtures("session_factory", "raw")
async def test_processes_asking_at_once_generate_each_key_once(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    calls.touch()
    brands = [f"Brand {number}" for number in range(10)]
    workers = [start_worker(engine.url, calls, 1.0, *brands) for _ in range(3)]
    outputs = [worker.communicate(timeout=30)[0] for worker in workers]

    assert all(worker.returncode == 0 for worker in workers)
    for output in outputs:
        assert sorted(output.splitlines()) == sorted(f"{brand} 42.00" for brand in brands)
    assert sorted(generator_calls(calls)) == sorted(brands)


@pytest.mark.usefixtures("session_factory")
async def test_a_killed_generator_is_taken_over_within_seconds(
    engine: AsyncEngine, raw: asyncpg.Connection, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    calls.touch()
    doomed = start_worker(engine.url, calls, 60.0, "Levi's")
    while not generator_calls(calls):  # noqa: ASYNC110 (another process writes the file)
        await asyncio.sleep(0.05)  # until it holds the lease and is generating
    survivor = start_worker(engine.url, calls, 0.5, "Levi's")
    await asyncio.sleep(0.5)  # the survivor is waiting on the lease
    killed_at = time.monotonic()
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()

    output = await asyncio.to_thread(survivor.communicate, timeout=30)
    took = time.monotonic() - killed_at

    assert survivor.returncode == 0
    assert output[0].splitlines() == ["Levi's 42.00"]
    assert generator_calls(calls) == ["Levi's", "Levi's"]
    assert took < LEASE_SECONDS + 2.0, f"took over {took:.1f} s after the kill"
    rows = await raw.fetchval("SELECT count(*) FROM public.brand_groups WHERE brand = 'Levi''s'")
    assert rows == 1


@pytest.mark.usefixtures("session_factory")
async def test_generation_through_pgbouncer(
    pgbouncer: URL, engine: AsyncEngine, raw: asyncpg.Connection
) -> None:
    through = create_engine(pgbouncer.set(database=engine.url.database), pgbouncer=True)
    llm = FakeLLM(seconds=0.5)
    try:
        async with (
            PricingLookup(through, generator=llm) as first,
            PricingLookup(through, generator=llm) as second,
        ):
            references = await asyncio.gather(
                *(
                    lookup.get_or_generate(f"Brand {number % 10}", "jeans", "501")
                    for number in range(40)
                    for lookup in (first, second)
                )
            )
    finally:
        await through.dispose()

    assert {reference.brand for reference in references} == {f"Brand {n}" for n in range(10)}
    assert all(reference.model_found for reference in references)
    assert set(llm.calls.values()) == {1}
    assert len(llm.calls) == 20
    assert await raw.fetchval("SELECT count(*) FROM public.pricing_store_generation_leases") == 0
