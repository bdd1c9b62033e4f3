"""PriceReference: what the pricing algorithm reads for one item, free of any session."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import _lru_cache_wrapper, lru_cache
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


# The lookups' select list. JSONB arrays come back as their JSON text (cast, so that a
# JSON codec an engine's connect hooks set up changes nothing), which `strings_of` parses
# once per distinct text: cheaper for the server than turning each into an array, and the
# same few lists recur across rows.
REFERENCE_COLUMNS = """
    bg.brand, bg.group_name, bg.base_price, bg.condition_sensitivity,
    bg.expected_origins::text, bg.expected_decades::text, bg.expected_trends::text,
    m.coefficient, m.expected_features::text
"""
# How many distinct JSON lists to keep parsed (a few MB at most); docs/scaling.md says
# what parsing each once is worth.
PARSED_LISTS = 16_384


ListParser = Callable[[str], tuple[str, ...]]


def strings_of(json_text: str) -> tuple[str, ...]:
    """The strings of a JSONB array as the server sent it."""
    return tuple(json.loads(json_text))


def list_parser() -> _lru_cache_wrapper[tuple[str, ...]]:
    """A parser that remembers the last PARSED_LISTS lists (one per lookup: `cache_clear`)."""
    return lru_cache(maxsize=PARSED_LISTS)(strings_of)


def reference_from_row(
    row: Sequence[Any], model: str | None, strings_of: ListParser = strings_of
) -> PriceReference:
    """Build the reference from a row of REFERENCE_COLUMNS (at the row's end)."""
    brand, group, price, sensitivity, origins, decades, trends, coefficient, features = row[-9:]
    found = coefficient is not None  # else no model row: the neutral coefficient
    return PriceReference(
        brand=brand,
        group_name=group,
        base_price=price,
        condition_sensitivity=sensitivity,
        expected_origins=strings_of(origins),
        expected_decades=strings_of(decades),
        expected_trends=strings_of(trends),
        model=model,
        coefficient=coefficient if found else NEUTRAL_COEFFICIENT,
        expected_features=strings_of(features) if found else (),
        model_found=found,
    )
