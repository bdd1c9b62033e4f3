"""BrandGroupRepository and ModelRepository on the migrated database."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pricing_store import (
    BrandGroup,
    BrandGroupRepository,
    DuplicateKeyError,
    InvalidValueError,
    Model,
    ModelRepository,
)
from tests.factories import brand_group, model


async def test_create_returns_the_row_with_its_id(session: AsyncSession) -> None:
    row = await BrandGroupRepository(session).create(brand_group())

    assert isinstance(row.id, int)
    assert row in session
    assert await BrandGroupRepository(session).count() == 1


async def test_find_by_brand_and_group(session: AsyncSession) -> None:
    repository = BrandGroupRepository(session)
    levis = await repository.create(brand_group("Levi's", "jeans"))
    await repository.create(brand_group("Levi's", "jackets"))

    assert await repository.find_by_brand_and_group("Levi's", "jeans") is levis
    assert await repository.find_by_brand_and_group("Levi's", "shorts") is None
    assert await repository.find_by_brand_and_group("levi's", "jeans") is None


async def test_lookups_canonicalise_keys_like_writes(session: AsyncSession) -> None:
    brands = BrandGroupRepository(session)
    models = ModelRepository(session)
    await brands.create(brand_group("Caf\u00e9 Racer", "jackets"))
    await models.create(model("Caf\u00e9 Racer", "jackets", "Mod\u00e8le 1"))

    assert await brands.find_by_brand_and_group("  Cafe\u0301 Racer ", "jackets\n") is not None
    assert await models.find_by_brand_group_model(" Cafe\u0301 Racer", "jackets", "Mode\u0300le 1")


async def test_lookups_reject_bad_keys_before_any_sql(session: AsyncSession) -> None:
    with pytest.raises(InvalidValueError, match=r"^group_name: must not be empty"):
        await BrandGroupRepository(session).find_by_brand_and_group("Levi's", " ")
    with pytest.raises(InvalidValueError, match=r"^model: .*NUL"):
        await ModelRepository(session).find_by_brand_group_model("Levi's", "jeans", "5\x0001")


async def test_model_repository_finds_one_and_lists_a_brand_group_by_model(
    session: AsyncSession,
) -> None:
    repository = ModelRepository(session)
    for name in ["Big E", "501", "505", "Type I"]:
        await repository.create(model("Levi's", "jeans", name))
    await repository.create(model("Levi's", "jackets", "Type III"))
    await repository.create(model("Wrangler", "jeans", "13MWZ"))

    found = await repository.find_by_brand_group_model("Levi's", "jeans", "Big E")
    assert found is not None
    assert found.model == "Big E"
    assert await repository.find_by_brand_group_model("Levi's", "jeans", "Big F") is None
    listed = await repository.find_by_brand_and_group("Levi's", "jeans")
    assert [row.model for row in listed] == ["501", "505", "Big E", "Type I"]
    assert await repository.find_by_brand_and_group("Levi's", "skirts") == []
    assert await repository.count() == 6


@pytest.mark.parametrize("repository_type", [BrandGroupRepository, ModelRepository])
async def test_pages_visit_rows_sharing_one_timestamp_exactly_once(
    session: AsyncSession, repository_type: type[BrandGroupRepository | ModelRepository]
) -> None:
    repository = repository_type(session)
    for number in range(230):
        session.add(
            brand_group(f"Brand {number}")
            if repository_type is BrandGroupRepository
            else model(name=f"Model {number}")
        )
    await session.flush()

    pages = [await repository.get_all(limit=100, offset=offset) for offset in (0, 100, 200)]

    assert [len(page) for page in pages] == [100, 100, 30]
    ids = [row.id for page in pages for row in page]
    assert len(set(ids)) == 230
    assert ids == sorted(ids, reverse=True)
    assert await repository.get_all(limit=100, offset=230) == []


async def test_get_all_is_newest_first(session_factory: async_sessionmaker[AsyncSession]) -> None:
    for brand in ["first", "second", "third"]:
        async with session_factory.begin() as separate:
            await BrandGroupRepository(separate).create(brand_group(brand))

    async with session_factory() as reader:
        rows = await BrandGroupRepository(reader).get_all()

    assert [row.brand for row in rows] == ["third", "second", "first"]
    assert rows[0].created_at > rows[-1].created_at


@pytest.mark.parametrize(
    ("limit", "offset", "message"),
    [
        (-1, 0, "^limit: must not be negative"),
        (10, -5, "^offset: must not be negative"),
        ("10", 0, "^limit: must be an integer"),
        (10, True, "^offset: must be an integer"),
    ],
)
async def test_get_all_rejects_bad_paging(
    session: AsyncSession, limit: object, offset: object, message: str
) -> None:
    with pytest.raises(InvalidValueError, match=message):
        await BrandGroupRepository(session).get_all(limit=limit, offset=offset)  # type: ignore[arg-type]


async def test_create_requires_every_column_without_a_default(session: AsyncSession) -> None:
    with pytest.raises(InvalidValueError, match=r"^base_price: is required"):
        await BrandGroupRepository(session).create(BrandGroup(brand="Levi's", group_name="jeans"))
    with pytest.raises(InvalidValueError, match=r"^model: is required"):
        await ModelRepository(session).create(Model(brand="Levi's", group_name="jeans"))
    with pytest.raises(InvalidValueError, match=r"^item: must be a BrandGroup, not Model"):
        await BrandGroupRepository(session).create(model())  # type: ignore[arg-type]

    assert await BrandGroupRepository(session).count() == 0


async def test_duplicate_key_keeps_the_callers_transaction_and_earlier_work(
    session: AsyncSession,
) -> None:
    repository = BrandGroupRepository(session)
    kept = await repository.create(brand_group("Levi's", "jeans"))
    await repository.create(brand_group("Nike", "sneakers"))

    with pytest.raises(DuplicateKeyError) as raised:
        await repository.create(brand_group(" Levi's ", "jeans", base_price=30))

    assert raised.value.constraint_name == "uq_brand_groups_brand_group"
    assert await repository.count() == 2
    await repository.create(brand_group("Zara", "dresses"))
    assert await repository.count() == 3
    assert kept.base_price == 25


async def test_duplicate_model_names_its_constraint(session: AsyncSession) -> None:
    repository = ModelRepository(session)
    await repository.create(model())

    with pytest.raises(DuplicateKeyError) as raised:
        await repository.create(model())

    assert raised.value.constraint_name == "uq_models_brand_group_model"
    assert await repository.count() == 1


async def test_failed_create_then_commit_keeps_earlier_rows(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as writer, writer.begin():
        repository = ModelRepository(writer)
        await repository.create(model(name="501"))
        with pytest.raises(DuplicateKeyError):
            await repository.create(model(name="501"))
        await repository.create(model(name="Big E"))

    async with session_factory() as reader:
        names = await reader.scalars(text("SELECT model FROM public.models ORDER BY model"))
        assert list(names) == ["501", "Big E"]


async def test_concurrent_creates_of_one_key_one_wins_the_rest_get_duplicate_key(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async def create_in_own_transaction() -> BrandGroup:
        async with session_factory.begin() as own:
            return await BrandGroupRepository(own).create(brand_group("Levi's", "jeans"))

    outcomes = await asyncio.gather(
        *(create_in_own_transaction() for _ in range(12)), return_exceptions=True
    )

    created = [outcome for outcome in outcomes if isinstance(outcome, BrandGroup)]
    duplicates = [outcome for outcome in outcomes if isinstance(outcome, DuplicateKeyError)]
    assert (len(created), len(duplicates)) == (1, 11)
    assert {error.constraint_name for error in duplicates} == {"uq_brand_groups_brand_group"}
