"""Generation leases between lookups, on the real server: what each holder and waiter does.

A lease's holder renews only the leases it holds now; one it could not release expires
`lease_seconds` after its last renewal, whatever else its owner goes on holding. A holder
stalled past its lease is taken over, and counts the lease lost. A waiter gives up after
generation_timeout + lease_seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from pricing_store import (
    GenerationTimeoutError,
    PriceReference,
    PricingLookup,
    PricingStoreError,
    create_engine,
)
from pricing_store.lookup.leases import lease_key
from pricing_store.models.lease import LEASES
from pricing_store.ops.roles import APP, ROLES_SQL
from tests.provision import OwnServer, asyncpg_dsn

LEASE_SECONDS = 1.0
# A waiter re-checks every RECHECK_EVERY (0.5 s): a lease that expired is taken within that,
# plus the claim's and the generation's own round trips.
TAKEN_OVER_WITHIN = LEASE_SECONDS + 1.5
KEY = ("Levi's", "jeans")
LEASE = lease_key("brand_groups", *KEY)
LEASE_ROW_SQL = (
    f"SELECT owner, expires_at, expires_at > clock_timestamp() AS unexpired "
    f"FROM {LEASES.fullname} WHERE lease_key = $1"
)


class Answering:
    """Answers at once with `base_price`, counting its calls."""

    def __init__(self, base_price: str) -> None:
        self.base_price = base_price
        self.calls = 0

    async def brand_group(self, brand: str, group: str) -> dict[str, object]:
        self.calls += 1
        return {"base_price": self.base_price}

    async def model(self, brand: str, group: str, model: str) -> dict[str, object]:
        raise AssertionError("no model is asked for")


@pytest.fixture
async def raw(admin_engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """The administrator's connection, to look at the lease table behind the lookups' backs."""
    connection = await asyncpg.connect(asyncpg_dsn(admin_engine.url))
    yield connection
    await connection.execute(f"TRUNCATE {LEASES.fullname}")
    await connection.close()


def grants_without_lease_delete(role: str) -> list[str]:
    """roles.sql's grants to the app role, to `role`, minus DELETE on the lease table."""
    grants = [
        line.replace(APP, role)
        for line in ROLES_SQL.read_text().splitlines()
        if line.startswith("GRANT ") and line.rstrip(";").endswith(f"TO {APP}")
    ]
    without = [line.replace(", DELETE", "") if LEASES.fullname in line else line for line in grants]
    assert [line for line in without if "DELETE" in line] == []
    assert without != grants, "roles.sql grants no DELETE on the lease table any more"
    return without


@pytest.fixture
async def no_delete_engine(admin_url: URL, raw: asyncpg.Connection) -> AsyncIterator[AsyncEngine]:
    """An engine as a role like the app's that may not DELETE leases: its releases fail."""
    role = f"lease_no_delete_{uuid.uuid4().hex[:8]}"  # roles are the whole server's
    await raw.execute(f"CREATE ROLE {role} LOGIN")
    try:
        database = await raw.fetchval("SELECT current_database()")
        await raw.execute(f'GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO {role}')
        for grant in grants_without_lease_delete(role):
            await raw.execute(grant)
        engine = create_engine(admin_url.set(username=role, password=None))
        try:
            yield engine
        finally:
            await engine.dispose()
    finally:
        await raw.execute(f"DROP OWNED BY {role}")  # its grants here, and on the database
        await raw.execute(f"DROP ROLE {role}")


@pytest.mark.usefixtures("session_factory")
async def test_a_lease_whose_release_failed_expires_while_its_owner_holds_other_leases(
    engine: AsyncEngine,
    no_delete_engine: AsyncEngine,
    raw: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A's generator fails for K; A's role may not DELETE, so K's lease is left behind.

    A goes on holding L's lease (its generator for L runs on), renewing it. K's lease is
    not renewed with it: B generates K within the lease time and a re-check. (Renewing
    every lease of the owner, as before, kept K's alive as long as A held any other, and B
    waited for the generation timeout.)
    """

    class FailsForKHangsForL:
        def __init__(self) -> None:
            self.generating_l = asyncio.Event()
            self.finish_l = asyncio.Event()

        async def brand_group(self, brand: str, group: str) -> dict[str, object]:
            if (brand, group) == KEY:
                raise ConnectionResetError("the LLM hung up")
            self.generating_l.set()
            await self.finish_l.wait()  # bounded by A's generation_timeout
            return {"base_price": "40.00"}

        async def model(self, brand: str, group: str, model: str) -> dict[str, object]:
            raise AssertionError("no model is asked for")

    a_llm, b_llm = FailsForKHangsForL(), Answering("31.00")
    async with (
        PricingLookup(
            no_delete_engine, generator=a_llm, lease_seconds=LEASE_SECONDS, generation_timeout=30
        ) as a,
        PricingLookup(engine, generator=b_llm, lease_seconds=LEASE_SECONDS) as b,
    ):
        holding_l = asyncio.create_task(a.get_or_generate("Lee", "jeans"))
        await asyncio.wait_for(a_llm.generating_l.wait(), 5)
        l_lease = await raw.fetchrow(LEASE_ROW_SQL, lease_key("brand_groups", "Lee", "jeans"))
        with pytest.raises(ConnectionResetError):
            await a.get_or_generate(*KEY)
        failed_at = time.monotonic()
        left = await raw.fetchrow(LEASE_ROW_SQL, LEASE)
        assert left is not None, "K's lease was released: the role could DELETE after all"
        assert left["unexpired"]
        assert left["owner"] == l_lease["owner"]  # A's, as is L's
        assert "not released; it will expire" in caplog.text

        try:
            async with asyncio.timeout(TAKEN_OVER_WITHIN + 3):  # fail fast, not in 120 s
                reference = await b.get_or_generate(*KEY)
        except TimeoutError:
            pytest.fail("B waited on a lease its owner kept renewing though it held it no more")
        took = time.monotonic() - failed_at

        still_l = await raw.fetchrow(LEASE_ROW_SQL, lease_key("brand_groups", "Lee", "jeans"))
        assert not holding_l.done()
        assert still_l["unexpired"]
        assert still_l["expires_at"] > l_lease["expires_at"]  # A renewed L all along
        a_llm.finish_l.set()
        await holding_l

    assert took < TAKEN_OVER_WITHIN, f"B generated K {took:.2f} s after A's generation failed"
    assert reference.base_price == Decimal("31.00")
    assert b_llm.calls == 1


class Stalling:
    """Blocks its caller's whole event loop for `seconds` (time.sleep: a real stall)."""

    def __init__(self, seconds: float, then_awaits: float, base_price: str) -> None:
        self.seconds = seconds
        self.then_awaits = then_awaits
        self.base_price = base_price
        self.stalling = threading.Event()
        self.stalled = threading.Event()
        self.calls = 0

    async def brand_group(self, brand: str, group: str) -> dict[str, object]:
        self.calls += 1
        self.stalling.set()
        time.sleep(self.seconds)  # noqa: ASYNC251 (the point: nothing else in its loop runs)
        self.stalled.set()
        if self.then_awaits:
            await asyncio.sleep(self.then_awaits)  # the rest of the answer, over the network
        return {"base_price": self.base_price}

    async def model(self, brand: str, group: str, model: str) -> dict[str, object]:
        raise AssertionError("no model is asked for")


def holder_in_its_own_loop(url: URL, generator: Stalling, outcome: dict[str, Any]) -> None:
    """Lookup A, in a thread with its own event loop: its stall stops A and nothing else."""

    async def main() -> None:
        engine = create_engine(url)
        try:
            async with PricingLookup(
                engine, generator=generator, lease_seconds=LEASE_SECONDS
            ) as lookup:
                outcome["reference"] = await lookup.get_or_generate(*KEY)
                outcome["leases_lost"] = lookup.stats().leases_lost
        finally:
            await engine.dispose()

    asyncio.run(main())


async def stalled_holder_taken_over(
    engine: AsyncEngine, a_llm: Stalling, outcome: dict[str, Any]
) -> tuple[asyncio.Task[None], PriceReference, float]:
    """Start A (stalling in its generator); B asks for the key meanwhile and gets it.

    Returns A's thread, B's reference and how long after A's stall began B had it.
    """
    holder = asyncio.create_task(
        asyncio.to_thread(holder_in_its_own_loop, engine.url, a_llm, outcome)
    )
    assert await asyncio.to_thread(a_llm.stalling.wait, 10), "A never called its generator"
    stalled_at = time.monotonic()
    b_llm = Answering("31.00")
    async with PricingLookup(engine, generator=b_llm, lease_seconds=LEASE_SECONDS) as b:
        reference = await b.get_or_generate(*KEY)
    took = time.monotonic() - stalled_at
    assert b_llm.calls == 1
    return holder, reference, took


@pytest.mark.usefixtures("session_factory")
async def test_a_holder_stalled_past_its_lease_is_taken_over_and_counts_the_lease_lost(
    engine: AsyncEngine, raw: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """A's generator blocks A's event loop for lease_seconds + 1 s: A cannot renew.

    B takes the expired lease over and generates the key. So the generator runs twice in
    that case (A's call and B's): a lease bounds how long a stalled holder blocks a key, not
    how many calls are made. The row is stored once, A's store letting B's row win; A,
    awaiting the rest of its answer once the stall is over, finds its lease lost.
    """
    caplog.set_level(logging.WARNING, logger="pricing_store.lookup.leases")
    a_llm = Stalling(LEASE_SECONDS + 1, then_awaits=0.2, base_price="30.00")
    outcome: dict[str, Any] = {}
    holder, b_reference, took = await stalled_holder_taken_over(engine, a_llm, outcome)
    assert took < TAKEN_OVER_WITHIN, f"B generated the key {took:.2f} s into A's stall"
    assert not a_llm.stalled.is_set(), "B waited for the stalled holder to wake up"
    await holder

    assert outcome["leases_lost"] == 1
    assert "lost: it expired and was taken" in caplog.text
    assert outcome["reference"] == b_reference  # both read the one stored row
    assert a_llm.calls == 1
    rows = await raw.fetchval(
        "SELECT count(*) FROM public.brand_groups WHERE brand = $1 AND group_name = $2", *KEY
    )
    assert rows == 1
    assert await raw.fetchval(f"SELECT count(*) FROM {LEASES.fullname}") == 0


@pytest.mark.usefixtures("session_factory")
async def test_a_stalled_holder_that_stores_at_once_still_counts_the_lease_lost(
    engine: AsyncEngine, raw: asyncpg.Connection
) -> None:
    """As above, but the generator returns the moment its stall ends, and renewals are slow.

    The lease table is locked while A wakes, so A's renewal (due since its stall) waits
    while its store goes through; A releases the lease, whose DELETE matches nothing. A
    lost its lease all the same, and must count it. (Without the lock this is a race that
    A loses about one time in five on loopback.)
    """
    a_llm = Stalling(LEASE_SECONDS + 1.5, then_awaits=0.0, base_price="30.00")
    outcome: dict[str, Any] = {}
    holder, b_reference, took = await stalled_holder_taken_over(engine, a_llm, outcome)
    assert took < TAKEN_OVER_WITHIN
    assert not a_llm.stalled.is_set(), "B waited for the stalled holder to wake up"
    locking = raw.transaction()
    await locking.start()
    await raw.execute(f"LOCK TABLE {LEASES.fullname} IN EXCLUSIVE MODE")
    try:
        assert await asyncio.to_thread(a_llm.stalled.wait, 10)
        await asyncio.sleep(0.5)  # A stores and releases; its renewal waits on the lock
    finally:
        await locking.rollback()
    await holder

    assert outcome["reference"] == b_reference
    rows = await raw.fetchval(
        "SELECT count(*) FROM public.brand_groups WHERE brand = $1 AND group_name = $2", *KEY
    )
    assert rows == 1
    assert outcome["leases_lost"] == 1


@pytest.mark.usefixtures("session_factory")
async def test_a_waiter_gives_up_on_a_live_holder_after_generation_timeout_plus_lease_seconds(
    engine: AsyncEngine,
) -> None:
    """A keeps renewing while its generator hangs; B waits its patience out, not for ever."""

    class Hangs:
        def __init__(self) -> None:
            self.generating = asyncio.Event()
            self.finish = asyncio.Event()

        async def brand_group(self, brand: str, group: str) -> dict[str, object]:
            self.generating.set()
            await self.finish.wait()  # longer than B's patience; bounded by A's timeout
            return {"base_price": "30.00"}

        async def model(self, brand: str, group: str, model: str) -> dict[str, object]:
            raise AssertionError("no model is asked for")

    a_llm, b_llm = Hangs(), Answering("31.00")
    generation_timeout = 1.0
    patience = generation_timeout + LEASE_SECONDS
    async with (
        PricingLookup(
            engine, generator=a_llm, lease_seconds=LEASE_SECONDS, generation_timeout=30
        ) as a,
        PricingLookup(
            engine,
            generator=b_llm,
            lease_seconds=LEASE_SECONDS,
            generation_timeout=generation_timeout,
        ) as b,
    ):
        holding = asyncio.create_task(a.get_or_generate(*KEY))
        await asyncio.wait_for(a_llm.generating.wait(), 5)
        started = time.monotonic()
        with pytest.raises(GenerationTimeoutError) as raised:
            async with asyncio.timeout(patience + 5):  # fail fast if it polls for ever
                await b.get_or_generate(*KEY)
        took = time.monotonic() - started
        assert not holding.done()  # A was generating, and renewing, all along
        a_llm.finish.set()
        await holding

    assert str(raised.value) == (
        'generating brand group ("Levi\'s", "jeans") in another process took longer than 2 s'
    )
    assert patience <= took < patience + 1.0, f"B gave up after {took:.2f} s"
    assert b_llm.calls == 0


async def test_renewals_failing_through_an_outage_are_warned_of_once(
    own_server: OwnServer, own_database: URL, caplog: pytest.LogCaptureFixture
) -> None:
    """A holder's renewals fail every third of a lease while the server is down: one warning."""
    caplog.set_level(logging.DEBUG, logger="pricing_store.lookup.leases")
    generating, finish = asyncio.Event(), asyncio.Event()

    class Waits:
        async def brand_group(self, brand: str, group: str) -> dict[str, object]:
            generating.set()
            await finish.wait()
            return {"base_price": "40.00"}

        async def model(self, brand: str, group: str, model: str) -> dict[str, object]:
            raise AssertionError("no model is asked for")

    engine = create_engine(own_database)
    try:
        async with PricingLookup(engine, generator=Waits(), lease_seconds=0.6) as lookup:
            generated = asyncio.create_task(lookup.get_or_generate(*KEY))
            await asyncio.wait_for(generating.wait(), 5)
            own_server.stop("immediate")
            await asyncio.sleep(1.5)  # about seven renewals, all refused
            own_server.start()
            finish.set()
            with contextlib.suppress(PricingStoreError):  # its lease may have run out
                await generated
    finally:
        await engine.dispose()
    failed = [r for r in caplog.records if "leases not renewed" in r.getMessage()]
    assert len(failed) >= 3
    assert [r.levelno for r in failed].count(logging.WARNING) == 1
