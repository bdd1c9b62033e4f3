"""Keyset paging: get_page and iter_all."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pricing_store import BrandGroupRepository, InvalidValueError, ModelRepository
from tests.factories import brand_group, model


async def test_pages_of_rows_sharing_one_timestamp_visit_each_once(session: AsyncSession) -> None:
    repository = ModelRepository(session)
    await repository.bulk_upsert(model(name=f"Model {number}") for number in range(230))

    first = await repository.get_page(100)
    second = await repository.get_page(100, after=first.next_cursor)
    third = await repository.get_page(100, after=second.next_cursor)

    assert [len(page.items) for page in (first, second, third)] == [100, 100, 30]
    assert third.next_cursor is None
    ids = [row.id for page in (first, second, third) for row in page.items]
    assert len(set(ids)) == 230
    assert ids == sorted(ids, reverse=True)


async def test_rows_inserted_between_pages_are_not_seen_twice(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory.begin() as writer:
        await BrandGroupRepository(writer).bulk_upsert(
            {"brand": f"Old {number}", "group_name": "jeans", "base_price": 25}
            for number in range(25)
        )

    seen: list[str] = []
    async with session_factory() as reader:
        repository = BrandGroupRepository(reader)
        page = await repository.get_page(10)
        while True:
            seen += [row.brand for row in page.items]
            async with session_factory.begin() as writer:
                await BrandGroupRepository(writer).create(brand_group(f"New {len(seen)}"))
            if page.next_cursor is None:
                break
            page = await repository.get_page(10, after=page.next_cursor)

    assert len(seen) == len(set(seen))
    assert {brand for brand in seen if brand.startswith("Old")} == {f"Old {n}" for n in range(25)}
    assert not any(brand.startswith("New") for brand in seen)


async def test_newest_rows_come_first(session_factory: async_sessionmaker[AsyncSession]) -> None:
    for brand in ["first", "second", "third"]:
        async with session_factory.begin() as writer:
            await BrandGroupRepository(writer).create(brand_group(brand))

    async with session_factory() as reader:
        page = await BrandGroupRepository(reader).get_page(2)
        rest = await BrandGroupRepository(reader).get_page(2, after=page.next_cursor)

    assert [row.brand for row in page.items + rest.items] == ["third", "second", "first"]


async def test_iter_all_yields_every_row_newest_first(session: AsyncSession) -> None:
    repository = BrandGroupRepository(session)
    await repository.bulk_upsert(
        {"brand": f"Brand {number}", "group_name": "jeans", "base_price": 25}
        for number in range(57)
    )

    rows = [row async for row in repository.iter_all(batch_size=10)]

    assert len({row.id for row in rows}) == 57
    assert [row.id for row in rows] == sorted((row.id for row in rows), reverse=True)


async def test_an_empty_table_has_one_empty_last_page(session: AsyncSession) -> None:
    page = await BrandGroupRepository(session).get_page(10)

    assert (page.items, page.next_cursor) == ([], None)
    assert [row async for row in BrandGroupRepository(session).iter_all()] == []


@pytest.mark.parametrize(
    ("limit", "after", "message"),
    [
        (0, None, r"^limit: must be at least 1"),
        (-1, None, r"^limit: must be at least 1, got -1"),
        (10, "not a cursor", r"^after: is not a cursor returned by get_page"),
        (10, 42, r"^after: must be a cursor string"),
    ],
)
async def test_bad_paging_arguments_are_rejected(
    session: AsyncSession, limit: int, after: object, message: str
) -> None:
    with pytest.raises(InvalidValueError, match=message):
        await BrandGroupRepository(session).get_page(limit, after=after)  # type: ignore[arg-type]
