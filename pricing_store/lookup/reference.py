"""PriceReference: what the pricing algorithm reads for one item, free of any session."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from functools import lru_cache
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


# The lookups' select list. JSONB arrays come back as their JSON text (asyncpg's default),
# which `strings_of` parses once per distinct text: cheaper for the server than turning
# each into an array, and the same few lists recur across rows.
REFERENCE_COLUMNS = """
    bg.brand, bg.group_name, bg.base_price, bg.condition_sensitivity,
    bg.expected_origins, bg.expected_decades, bg.expected_trends,
    m.coefficient, m.expected_features
"""
# How many distinct JSON lists to keep parsed (a few MB at most).
PARSED_LISTS = 16_384


@lru_cache(maxsize=PARSED_LISTS)
def strings_of(json_text: str) -> tuple[str, ...]:
    """The strings of a JSONB array as the server sent it."""
    return tuple(json.loads(json_text))


# Lookups build thousands of references a second. A frozen dataclass's __init__ sets each
# field through object.__setattr__; calling each slot's setter directly, one by one rather
# than in a loop, builds one in well under half the time.
SETTERS = {
    field.name: getattr(PriceReference, field.name).__set__ for field in fields(PriceReference)
}
set_brand = SETTERS["brand"]
set_group_name = SETTERS["group_name"]
set_base_price = SETTERS["base_price"]
set_condition_sensitivity = SETTERS["condition_sensitivity"]
set_expected_origins = SETTERS["expected_origins"]
set_expected_decades = SETTERS["expected_decades"]
set_expected_trends = SETTERS["expected_trends"]
set_model = SETTERS["model"]
set_coefficient = SETTERS["coefficient"]
set_expected_features = SETTERS["expected_features"]
set_model_found = SETTERS["model_found"]
new_reference = object.__new__


def reference_from_row(row: Sequence[Any], model: str | None) -> PriceReference:
    """Build the reference from a row of REFERENCE_COLUMNS (at the row's end)."""
    brand, group, price, sensitivity, origins, decades, trends, coefficient, features = row[-9:]
    reference: PriceReference = new_reference(PriceReference)
    set_brand(reference, brand)
    set_group_name(reference, group)
    set_base_price(reference, price)
    set_condition_sensitivity(reference, sensitivity)
    set_expected_origins(reference, strings_of(origins))
    set_expected_decades(reference, strings_of(decades))
    set_expected_trends(reference, strings_of(trends))
    set_model(reference, model)
    if coefficient is None:  # no model row
        set_coefficient(reference, NEUTRAL_COEFFICIENT)
        set_expected_features(reference, ())
        set_model_found(reference, False)
    else:
        set_coefficient(reference, coefficient)
        set_expected_features(reference, strings_of(features))
        set_model_found(reference, True)
    return reference
