"""What a generator is: the protocol `get_or_generate` calls, and the tables it fills."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from pricing_store.errors import InvalidValueError
from pricing_store.models import BrandGroup, Model
from pricing_store.models.base import KeyedModel
from pricing_store.repositories.statements import table_of

GeneratedKey = tuple[str, ...]


class PriceGenerator(Protocol):
    """What `PricingLookup.get_or_generate` asks for a missing row (an LLM client, say).

    Each method returns the row's column values, as a mapping or a model object; the key
    columns may be left out, and must match the key asked for when given.
    """

    async def brand_group(self, brand: str, group: str) -> Mapping[str, object] | BrandGroup:
        """Generate the Brand×Group's row."""
        ...

    async def model(self, brand: str, group: str, model: str) -> Mapping[str, object] | Model:
        """Generate the model's row."""
        ...


@dataclass(frozen=True)
class Kind:
    """One table that rows can be generated for."""

    description: str
    row_class: type[KeyedModel]
    method: str

    @property
    def table(self) -> str:
        """The table's name, as change notifications give it."""
        return table_of(self.row_class).name

    def describe(self, key: GeneratedKey) -> str:
        """`brand group ("Levi's", "jeans")`, for messages."""
        parts = ", ".join(json.dumps(part, ensure_ascii=False) for part in key)
        return f"{self.description} ({parts})"


BRAND_GROUP = Kind("brand group", BrandGroup, "brand_group")
MODEL = Kind("model", Model, "model")


def checked_generator(generator: object) -> PriceGenerator:
    """The generator, once it is known to have both methods.

    Raises:
        InvalidValueError: if it lacks `brand_group` or `model`.
    """
    for method in (BRAND_GROUP.method, MODEL.method):
        if not callable(getattr(generator, method, None)):
            raise InvalidValueError(
                "generator", f"must have async methods brand_group and model; no {method}"
            )
    return generator  # type: ignore[return-value]
