"""PriceReference: what the pricing algorithm reads for one item, free of any session."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import _lru_cache_wrapper, lru_cache
from typing import Any, get_type_hints


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


def key_of(reference: PriceReference) -> tuple[str, str, str | None]:
    """The canonical key a reference was read for (the cache's key of it)."""
    return (reference.brand, reference.group_name, reference.model)


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


# PriceReference's fields in order: the lookup's queries select them in this order, first
# (see `queries`), so a row is read by position. Its lists (the tuples) come as JSON text.
FIELDS = tuple(field.name for field in dataclasses.fields(PriceReference))
FIELD_COUNT = len(FIELDS)
LISTS = tuple(
    (FIELDS.index(name), name)
    for name, kind in get_type_hints(PriceReference).items()
    if kind == tuple[str, ...]
)
# PriceReference's twin, mutable, with the very same slots: a reference is built as one,
# then made a PriceReference. A frozen dataclass's __init__ sets each field through
# object.__setattr__, which cost more than half of building a reference from a row.
_Building = dataclasses.make_dataclass(
    "_Building",
    [(field.name, field.type) for field in dataclasses.fields(PriceReference)],
    slots=True,
)


def reference_from_row(row: Sequence[Any], strings_of: ListParser = strings_of) -> PriceReference:
    """Build the reference from a row of the lookup's queries: its fields, in order, first."""
    values = row[:FIELD_COUNT]
    reference = _Building(*values)
    for at, name in LISTS:
        setattr(reference, name, strings_of(values[at]))
    reference.__class__ = PriceReference  # same slots: a class switch, no copy
    return reference  # type: ignore[no-any-return]
