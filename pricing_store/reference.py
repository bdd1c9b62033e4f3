"""PriceReference: what the pricing algorithm reads for one item, free of any session."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
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


# Lookups build thousands of references a second. A frozen dataclass's __init__ sets each
# field through object.__setattr__; filling the slots directly builds one in half the time.
SLOT_SETTERS = tuple(
    getattr(PriceReference, field.name).__set__ for field in fields(PriceReference)
)


def reference_from_row(row: Sequence[Any], model: str | None) -> PriceReference:
    """Build the reference from a row of REFERENCE_COLUMNS (at the row's end)."""
    brand, group, price, sensitivity, origins, decades, trends, coefficient, features = row[-9:]
    found = coefficient is not None
    values = (
        brand,
        group,
        price,
        sensitivity,
        tuple(origins),
        tuple(decades),
        tuple(trends),
        model,
        coefficient if found else NEUTRAL_COEFFICIENT,
        tuple(features) if found else (),
        found,
    )
    reference = object.__new__(PriceReference)
    for set_slot, value in zip(SLOT_SETTERS, values, strict=False):
        set_slot(reference, value)
    return reference
