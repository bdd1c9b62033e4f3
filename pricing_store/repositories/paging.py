"""Keyset pages: newest first, each after an opaque cursor naming the last row seen.

A page after a cursor is one index range scan on (created_at DESC, id DESC), so its cost
does not grow with its depth, and rows inserted between pages are never seen twice.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from pricing_store.errors import InvalidValueError

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """Rows of one page, and the cursor of the next page (None after the last)."""

    items: list[T]
    next_cursor: str | None


def encode_cursor(created_at: datetime, row_id: int) -> str:
    """An opaque cursor naming a row's place in the order."""
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: object) -> tuple[datetime, int]:
    """The (created_at, id) a cursor names.

    Raises:
        InvalidValueError: if `cursor` did not come from `get_page`.
    """
    if not isinstance(cursor, str):
        raise InvalidValueError("after", f"must be a cursor string, not {type(cursor).__name__}")
    try:
        moment, _, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(moment), int(row_id)
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidValueError("after", "is not a cursor returned by get_page") from None
