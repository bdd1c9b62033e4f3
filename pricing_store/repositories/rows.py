"""Turning what callers pass (model objects or mappings) into validated column values."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any, TypeAlias

from sqlalchemy import inspect
from sqlalchemy.orm import InstanceState

from pricing_store.errors import InvalidValueError
from pricing_store.models.base import KeyedModel

# A model object or a mapping of column names.
Item: TypeAlias = KeyedModel | Mapping[str, Any]


def item_values(
    row_class: type[KeyedModel], item: object, *, key: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Return the canonical values of the columns `item` sets.

    `item` is an instance of `row_class`, whose values were validated as they were
    assigned, or a mapping of column names, validated here. Columns left out take their
    database default; a column without one must be present. `key` fills in the natural
    key's columns, which `item` may leave out but not contradict.

    Raises:
        InvalidValueError: naming the field and the rule that a value broke.
    """
    rules = row_class.field_rules
    # A plain dict first: bulk loads pass millions, and an ABC check costs more than this.
    if item.__class__ is dict or isinstance(item, Mapping):
        if not rules.keys() >= item.keys():
            unknown = sorted(str(field) for field in item if field not in rules)
            raise InvalidValueError(unknown[0], f"is not a column of {row_class.__name__}")
        values = {field: rules[field](field, value) for field, value in item.items()}
    elif isinstance(item, row_class):
        state: InstanceState[Any] = inspect(item)
        given = state.dict
        values = {field: given[field] for field in rules if field in given}
    else:
        raise InvalidValueError(
            "item", f"must be a {row_class.__name__} or a mapping, not {type(item).__name__}"
        )
    if key:
        for field, wanted in key.items():
            if values.setdefault(field, wanted) != wanted:
                raise InvalidValueError(field, f"{values[field]!r} is not the requested {wanted!r}")
    required = required_fields(row_class)
    if not values.keys() >= required:
        missing = next(field for field in rules if field in required and field not in values)
        raise InvalidValueError(missing, "is required")
    return values


@cache
def required_fields(row_class: type[KeyedModel]) -> frozenset[str]:
    """The writable columns that have no database default."""
    columns = row_class.__table__.columns
    return frozenset(
        field for field in row_class.field_rules if columns[field].server_default is None
    )


def at_position(position: int, error: InvalidValueError) -> InvalidValueError:
    """Prefix the error's field with the item's position in a batch."""
    return InvalidValueError(f"items[{position}].{error.field}", error.rule)
