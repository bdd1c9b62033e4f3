"""Data access for `public.models`."""

from __future__ import annotations

from sqlalchemy import select

from pricing_store.errors import translated
from pricing_store.models import Model
from pricing_store.models.model import MODEL_RULES
from pricing_store.repositories.base import Repository
from pricing_store.repositories.statements import key_parameters

# Built once, with bound parameters `brand` and `group_name`.
MODELS_OF_BRAND_GROUP = (
    select(Model).where(*key_parameters(Model, ("brand", "group_name"))).order_by(Model.model)
)


class ModelRepository(Repository[Model]):
    """Per-model price coefficients."""

    row_class = Model

    @translated
    async def find_by_brand_group_model(self, brand: str, group: str, model: str) -> Model | None:
        """Return the model, or None; keys are canonicalised as on write.

        Raises:
            InvalidValueError: if a key is not a valid key.
        """
        return await self._find_by_key(brand=brand, group_name=group, model=model)

    @translated
    async def find_by_brand_and_group(self, brand: str, group: str) -> list[Model]:
        """Return every model of a Brand×Group, ordered by model name.

        Raises:
            InvalidValueError: if a key is not a valid key.
        """
        key = {
            "brand": MODEL_RULES["brand"]("brand", brand),
            "group_name": MODEL_RULES["group_name"]("group_name", group),
        }
        return list(await self.session.scalars(MODELS_OF_BRAND_GROUP, key))
