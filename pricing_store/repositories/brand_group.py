"""Data access for `public.brand_groups`."""

from __future__ import annotations

from sqlalchemy import select

from pricing_store.models import BrandGroup
from pricing_store.models.brand_group import BRAND_GROUP_RULES
from pricing_store.repositories.base import Repository


class BrandGroupRepository(Repository[BrandGroup]):
    """Brand×Group base prices."""

    model_type = BrandGroup

    async def find_by_brand_and_group(self, brand: str, group: str) -> BrandGroup | None:
        """Return the Brand×Group, or None; keys are canonicalised as on write.

        Raises:
            InvalidValueError: if a key is not a valid key.

        """
        statement = select(BrandGroup).where(
            BrandGroup.brand == BRAND_GROUP_RULES["brand"]("brand", brand),
            BrandGroup.group_name == BRAND_GROUP_RULES["group_name"]("group_name", group),
        )
        return await self.session.scalar(statement)
