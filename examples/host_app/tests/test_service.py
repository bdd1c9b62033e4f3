"""The host's service and models on a database from pricing_store's pytest plugin."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import pytest
from host_app.models import Product
from host_app.service import lifespan, price_of
from sqlalchemy import Column, ForeignKey, Integer, MetaData, Table, select, text
from sqlalchemy.exc import IntegrityError, NoReferencedTableError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from pricing_store import BrandGroup, BrandGroupRepository


class FakeLLM:
    """Answers at once, and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def brand_group(self, brand: str, group: str) -> Mapping[str, object]:
        self.calls += 1
        return {"base_price": "40.00"}

    async def model(self, brand: str, group: str, model: str) -> Mapping[str, object]:
        self.calls += 1
        return {"coefficient": "1.50"}


async def test_a_host_model_references_brand_groups_across_schemas(
    pricing_store_session: AsyncSession, host_database_url: str
) -> None:
    # This transaction works in user_1's schema (and public, where the package's tables are).
    await pricing_store_session.connection(
        execution_options={"schema_translate_map": {None: "user_1"}}
    )
    group = await BrandGroupRepository(pricing_store_session).upsert(
        {"brand": "Levi's", "group_name": "jeans", "base_price": 25}
    )
    pricing_store_session.add(
        Product(title="501", brand_group_id=group.id, condition=Decimal("0.9"))
    )
    await pricing_store_session.flush()

    found = (
        await pricing_store_session.execute(
            select(Product.title, BrandGroup.brand, BrandGroup.base_price).join(Product.brand_group)
        )
    ).one()
    assert tuple(found) == ("501", "Levi's", Decimal("25.00"))

    orphan = Product(title="?", brand_group_id=group.id + 1_000, condition=Decimal("1"))
    pricing_store_session.add(orphan)
    with pytest.raises(IntegrityError, match="products_brand_group_id_fkey"):
        await pricing_store_session.flush()


def test_the_string_form_of_the_foreign_key_needs_the_table_in_your_metadata() -> None:
    metadata = MetaData()
    brand_group_id: Column[int] = Column("brand_group_id", ForeignKey("public.brand_groups.id"))
    Table("orders", metadata, Column("id", Integer, primary_key=True), brand_group_id)
    (foreign_key,) = brand_group_id.foreign_keys
    with pytest.raises(NoReferencedTableError):
        assert foreign_key.column is None

    BrandGroup.__table__.to_metadata(metadata)  # type: ignore[attr-defined]
    assert foreign_key.column.table.fullname == "public.brand_groups"


@pytest.mark.usefixtures("pricing_store_empty_tables")  # the lookup commits what it generates
async def test_the_service_lifespan_prices_a_tenants_product(host_database_url: str) -> None:
    url = host_database_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    writer = create_async_engine(url)
    try:
        async with async_sessionmaker(writer).begin() as session:
            await session.connection(execution_options={"schema_translate_map": {None: "user_2"}})
            group = await BrandGroupRepository(session).upsert(
                {"brand": "Nike", "group_name": "sneakers", "base_price": 80}
            )
            product = Product(
                title="AJ1", brand_group_id=group.id, model="Air Jordan 1", condition=Decimal("0.5")
            )
            session.add(product)
            await session.flush()
            product_id = product.id

        llm = FakeLLM()
        async with lifespan(url, generator=llm) as services:
            first = await price_of(services, "user_2", product_id)
            again = await price_of(services, "user_2", product_id)
            assert services.pricing.stats().hits >= 1
        assert first == again == Decimal("60.00")  # 80 × 1.50 (generated) × 0.5
        assert llm.calls == 1  # only the model was missing, and only once
    finally:
        async with writer.begin() as connection:
            await connection.execute(text("DELETE FROM user_2.products"))  # ours, then theirs
        await writer.dispose()
