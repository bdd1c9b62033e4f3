"""PriceReference: what the pricing algorithm reads for one item, free of any session."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# A Brand×Group without a matching model row prices at the neutral coefficient.
NEUTRAL_COEFFICIENT = Decimal("1.00")


@dataclass(frozen=True, slots=True)
class PriceReference:
    """A Brand×Group's base price and expectations, with one model's coefficient.

    `model` is the model asked for (None when none was); `model_found` says whether a row
    for it exists. Without one, `coefficient` is 1.00 and `expected_features` empty.
    """

    brand: str
    group_name: str
    base_price: Decimal
    condition_sensitivity: Decimal
    expected_origins: tuple[str, ...]
    expected_decades: tuple[str, ...]
    expected_trends: tuple[str, ...]
    model: str | None
    coefficient: Decimal
    expected_features: tuple[str, ...]
    model_found: bool


# The lookups' select list; JSONB arrays come back as text[], which asyncpg decodes natively.
REFERENCE_COLUMNS = """
    bg.brand, bg.group_name, bg.base_price, bg.condition_sensitivity,
    ARRAY(SELECT jsonb_array_elements_text(bg.expected_origins)),
    ARRAY(SELECT jsonb_array_elements_text(bg.expected_decades)),
    ARRAY(SELECT jsonb_array_elements_text(bg.expected_trends)),
    m.coefficient,
    ARRAY(SELECT jsonb_array_elements_text(m.expected_features))
"""


def reference_from_row(row: Sequence[Any], model: str | None) -> PriceReference:
    """Build the reference from a row of REFERENCE_COLUMNS (at the row's end)."""
    *_, brand, group, price, sensitivity, origins, decades, trends, coefficient, features = row
    found = coefficient is not None
    return PriceReference(
        brand=brand,
        group_name=group,
        base_price=price,
        condition_sensitivity=sensitivity,
        expected_origins=tuple(origins),
        expected_decades=tuple(decades),
        expected_trends=tuple(trends),
        model=model,
        coefficient=coefficient if found else NEUTRAL_COEFFICIENT,
        expected_features=tuple(features) if found else (),
        model_found=found,
    )
