"""Least privilege: the app role does all the package needs, and cannot change the schema."""

from __future__ import annotations

from decimal import Decimal

import asyncpg
import pytest
from sqlalchemy.engine import URL

from pricing_store import (
    BrandGroupRepository,
    ModelRepository,
    PricingLookup,
    create_engine,
    create_session_factory,
)
from pricing_store.ops.roles import APP, create_roles
from tests.factories import brand_group, model
from tests.provision import asyncpg_dsn


async def test_the_app_role_reads_and_writes_but_cannot_change_the_schema(
    own_database: URL,
) -> None:
    await create_roles(own_database.render_as_string(hide_password=False))
    await create_roles(own_database.render_as_string(hide_password=False))  # idempotent
    as_app = own_database.set(username=APP)
    engine = create_engine(as_app)
    sessions = create_session_factory(engine)

    async with sessions.begin() as session:
        brands = BrandGroupRepository(session)
        models = ModelRepository(session)
        await brands.create(brand_group("Nike", "sneakers"))
        await brands.upsert(brand_group(base_price=30))
        await brands.bulk_upsert(brand_group(f"Brand {number}") for number in range(50))
        await models.get_or_create(model())
        await models.get_or_create(model(name="Big E", coefficient="2.5"))
        assert len((await brands.get_page(10)).items) == 10
    async with PricingLookup(engine, cache_size=10) as lookup:
        reference = await lookup.get("Levi's", "jeans", "Big E")
        assert reference is not None
        assert reference.coefficient == Decimal("2.50")

    class Generator:
        async def brand_group(self, brand: str, group: str) -> dict[str, object]:
            return {"base_price": 40}

        async def model(self, brand: str, group: str, model: str) -> dict[str, object]:
            return {"coefficient": "1.5"}

    async with PricingLookup(engine, generator=Generator()) as lookup:
        generated = await lookup.get_or_generate("Zara", "dresses", "Midi")
        assert (generated.base_price, generated.coefficient) == (Decimal("40.00"), Decimal("1.50"))

    app = await asyncpg.connect(asyncpg_dsn(as_app))
    for statement in (
        "DROP TABLE public.models",
        "ALTER TABLE public.brand_groups ADD COLUMN note text",
        "TRUNCATE public.brand_groups",
        "DELETE FROM public.brand_groups",
        "CREATE TABLE public.intruder (id int)",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app.execute(statement)
    await app.close()
    await engine.dispose()
