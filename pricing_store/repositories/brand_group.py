"""Data access for `public.brand_groups`."""

from __future__ import annotations

from pricing_store.errors import translated
from pricing_store.models import BrandGroup
from pricing_store.repositories.base import Generate, Repository


class BrandGroupRepository(Repository[BrandGroup]):
    """Brand×Group base prices."""

    model_type = BrandGroup

    @translated
    async def find_by_brand_and_group(self, brand: str, group: str) -> BrandGroup | None:
        """Return the Brand×Group, or None; keys are canonicalised as on write.

        Raises:
            InvalidValueError: if a key is not a valid key.
        """
        return await self._find_by_key(brand=brand, group_name=group)

    async def get_or_generate(
        self, brand: str, group: str, *, generate: Generate
    ) -> tuple[BrandGroup, bool]:
        """Return the Brand×Group, or store what `await generate()` makes for it.

        `generate` runs only when the row is missing, and once per key across every
        process: concurrent callers wait on a transaction-scoped advisory lock until the
        first caller's transaction ends. This holds the caller's transaction, its pooled
        connection and the lock open for the whole `generate` call: with an LLM call of
        seconds, a herd of callers exhausts the pool. Services should use
        `PricingLookup.get_or_generate`, which holds nothing while generating.
        `generate` returns a mapping of column values or a model object; the key may be
        left out of it. If it raises, nothing is written.

        Raises:
            InvalidValueError: if a key, or what `generate` returned, is invalid.
        """
        return await self._get_or_generate({"brand": brand, "group_name": group}, generate)
