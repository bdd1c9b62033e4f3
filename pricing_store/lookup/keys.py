"""Lookup keys: canonical forms (trimmed, NFC-normalised) as every write stores them.

The pricing algorithm asks for the same few thousand keys again and again, so a lookup
remembers their canonical forms, but only for keys asked for in their canonical spelling:
what it keeps is then never longer than a column allows, whatever a caller passes (a key
padded with a megabyte of spaces is worked out afresh each time, and not kept).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from pricing_store.errors import InvalidValueError
from pricing_store.models.brand_group import BRAND_GROUP_RULES
from pricing_store.models.model import MODEL_RULES
from pricing_store.validation import MAX_KEYS_PER_CALL

Key = tuple[str, str, str | None]
# How many canonical keys one lookup remembers (a few MB at most).
REMEMBERED_KEYS = 16_384


def padded(key: Sequence[Any]) -> tuple[Any, ...]:
    """A two-part key with its model (None) made explicit, so both spellings share entries."""
    return (key[0], key[1], None) if len(key) == 2 else tuple(key)


def canonicalised(brand: object, group: object, model: object) -> Key:
    """The canonical key, worked out afresh.

    Raises:
        InvalidValueError: if a part is not a valid key.
    """
    return (
        BRAND_GROUP_RULES["brand"]("brand", brand),
        BRAND_GROUP_RULES["group_name"]("group_name", group),
        None if model is None else MODEL_RULES["model"]("model", model),
    )


class CanonicalKeys:
    """One lookup's remembered canonical keys; `clear()` lets them all go."""

    def __init__(self, size: int = REMEMBERED_KEYS) -> None:
        self._size = size
        self._known: dict[tuple[object, ...], Key] = {}

    def __call__(self, brand: object, group: object, model: object) -> Key:
        """The canonical form of a key.

        Raises:
            InvalidValueError: if a part is not a valid key.
        """
        spelled = (brand, group, model)
        try:
            return self._known[spelled]
        except KeyError:
            pass
        except TypeError:  # an unhashable part, so not a string: let the rules say so
            return canonicalised(brand, group, model)
        key = canonicalised(brand, group, model)
        if key == spelled:  # only what is bounded by the columns is kept
            if len(self._known) >= self._size:
                self._known.clear()
            self._known[spelled] = key
        return key

    def at(self, position: int, key: object) -> Key:
        """The canonical form of `keys[position]`.

        Raises:
            InvalidValueError: naming the position, if the key is not valid.
        """
        if type(key) is tuple:  # a key asked before in canonical spelling is known as it is
            try:
                known = self._known.get(key)
            except TypeError:  # unhashable: certainly not known
                known = None
            if known is not None:
                return known
        if not isinstance(key, tuple) or len(key) not in (2, 3):
            raise InvalidValueError(f"keys[{position}]", "must be a (brand, group[, model]) tuple")
        try:
            return self(*padded(key))
        except InvalidValueError as error:
            raise InvalidValueError(f"keys[{position}].{error.field}", error.rule) from None

    def clear(self) -> None:
        """Forget every remembered key."""
        self._known.clear()


def listed_keys(keys: object) -> list[Any]:
    """The keys of a `get_many` call, as a list of bounded length.

    Raises:
        InvalidValueError: if `keys` is not an iterable of at most MAX_KEYS_PER_CALL keys.
    """
    if isinstance(keys, str | bytes) or not isinstance(keys, Iterable):
        raise InvalidValueError(
            "keys",
            f"must be an iterable of (brand, group[, model]) tuples, not {type(keys).__name__}",
        )
    listed = list(itertools.islice(keys, MAX_KEYS_PER_CALL + 1))
    if len(listed) > MAX_KEYS_PER_CALL:
        raise InvalidValueError("keys", f"must be at most {MAX_KEYS_PER_CALL} keys per call")
    return listed
