"""Data access for `public.brand_groups`."""

from __future__ import annotations

from pricing_store.errors import translated
from pricing_store.models import BrandGroup
from pricing_store.repositories.base import Repository


class BrandGroupRepository(Repository[BrandGroup]):
    """Brand×Group base prices."""

    row_class = BrandGroup

    @translated
    async def find_by_brand_and_group(self, brand: str, group: str) -> BrandGroup | None:
        """Return the Brand×Group, or None; keys are canonicalised as on write.

        Raises:
            InvalidValueError: if a key is not a valid key.
        """
        return await self._find_by_key(brand=brand, group_name=group)
