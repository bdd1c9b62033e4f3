"""The models against the migrated database: types, defaults, timestamps, JSONB, constraints."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pricing_store import BrandGroup, BrandGroupRepository, Model, ModelRepository
from tests.factories import brand_group, model


async def test_omitted_columns_take_the_database_defaults(session: AsyncSession) -> None:
    row = await BrandGroupRepository(session).create(brand_group())

    assert row.id is not None
    assert row.expected_origins == []
    assert row.expected_decades == []
    assert row.expected_trends == []
    assert row.condition_sensitivity == Decimal("1.00")
    assert isinstance(row.created_at, datetime)
    assert row.created_at.tzinfo is not None
    assert row.updated_at == row.created_at

    coefficient = (await ModelRepository(session).create(model())).coefficient
    assert coefficient == Decimal("1.00")
    assert isinstance(coefficient, Decimal)


async def test_values_come_back_as_stored(session: AsyncSession) -> None:
    await BrandGroupRepository(session).create(
        brand_group(
            base_price=19.99,
            condition_sensitivity="1.25",
            expected_origins=["USA", "Mexico"],
            expected_decades=["1990s"],
            expected_trends=["workwear", "y2k"],
        )
    )
    session.expunge_all()

    row = await BrandGroupRepository(session).find_by_brand_and_group("Levi's", "jeans")

    assert row is not None
    assert row.base_price == Decimal("19.99")
    assert isinstance(row.base_price, Decimal)
    assert row.condition_sensitivity == Decimal("1.25")
    assert row.expected_origins == ["USA", "Mexico"]
    assert row.expected_decades == ["1990s"]
    assert row.expected_trends == ["workwear", "y2k"]
    stored = await session.scalar(
        text("SELECT jsonb_typeof(expected_origins) FROM public.brand_groups")
    )
    assert stored == "array"


async def test_in_place_list_edits_are_saved(session: AsyncSession) -> None:
    row = await ModelRepository(session).create(model(expected_features=["selvedge"]))
    await session.commit()

    row.expected_features.append("chain_stitching")
    await session.commit()

    stored = await session.scalar(text("SELECT expected_features FROM public.models"))
    assert stored == ["selvedge", "chain_stitching"]


async def test_updated_at_advances_on_orm_update(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory.begin() as first:
        row = await BrandGroupRepository(first).create(brand_group())
    created_at, updated_at = row.created_at, row.updated_at

    async with session_factory.begin() as second:
        loaded = await second.get_one(BrandGroup, row.id)
        loaded.base_price = Decimal("30.00")

    assert loaded.created_at == created_at
    assert loaded.updated_at > updated_at
    async with session_factory() as third:
        assert (await third.get_one(BrandGroup, row.id)).updated_at == loaded.updated_at


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        (
            "INSERT INTO public.brand_groups (brand, group_name, base_price) VALUES ('a','b',4.99)",
            "ck_brand_groups_base_price",
        ),
        (
            "INSERT INTO public.brand_groups (brand, group_name, base_price) VALUES ('a','b',501)",
            "ck_brand_groups_base_price",
        ),
        (
            "INSERT INTO public.brand_groups (brand, group_name, base_price, "
            "condition_sensitivity) VALUES ('a','b',10,1.6)",
            "ck_brand_groups_sensitivity",
        ),
        (
            "INSERT INTO public.models (brand, group_name, model, coefficient) "
            "VALUES ('a','b','c',3.1)",
            "ck_models_coefficient",
        ),
        (
            "INSERT INTO public.models (brand, group_name, model, coefficient) "
            "VALUES ('a','b','c',0.4)",
            "ck_models_coefficient",
        ),
    ],
)
async def test_the_database_enforces_the_ranges_too(
    session: AsyncSession, statement: str, constraint: str
) -> None:
    with pytest.raises(IntegrityError) as raised:
        async with session.begin_nested():
            await session.execute(text(statement))

    assert raised.value.orig is not None
    assert getattr(raised.value.orig.__cause__, "constraint_name", None) == constraint


async def test_the_database_rejects_duplicate_keys_too(session: AsyncSession) -> None:
    insert = "INSERT INTO public.models (brand, group_name, model) VALUES ('a', 'b', 'c')"
    await session.execute(text(insert))

    with pytest.raises(IntegrityError):
        async with session.begin_nested():
            await session.execute(text(insert))


def test_repr_is_readable() -> None:
    assert repr(brand_group()) == "<BrandGroup(brand=\"Levi's\", group='jeans', base_price=25.00)>"
    assert repr(model(coefficient="2.5")) == (
        "<Model(brand=\"Levi's\", group='jeans', model='501', coeff=2.50)>"
    )


async def test_rows_live_in_the_public_schema(session: AsyncSession) -> None:
    await ModelRepository(session).create(model())

    names = await session.scalars(
        select(text("table_schema || '.' || table_name"))
        .select_from(text("information_schema.tables"))
        .where(text("table_name IN ('brand_groups', 'models')"))
    )
    assert sorted(names) == ["public.brand_groups", "public.models"]
    assert Model.__table__.schema == "public"
