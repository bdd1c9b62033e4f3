"""Small builders of valid rows, so each test states only what it is about."""

from __future__ import annotations

from typing import Any

from pricing_store import BrandGroup, Model


def brand_group(brand: str = "Levi's", group_name: str = "jeans", **values: Any) -> BrandGroup:
    """A valid Brand×Group; `values` override or add columns."""
    return BrandGroup(brand=brand, group_name=group_name, **{"base_price": 25, **values})


def model(
    brand: str = "Levi's", group_name: str = "jeans", name: str = "501", **values: Any
) -> Model:
    """A valid model row; `values` override or add columns."""
    return Model(brand=brand, group_name=group_name, model=name, **values)
