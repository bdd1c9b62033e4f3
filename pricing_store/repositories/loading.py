"""Placing a row fetched outside the ORM into a session, as if the ORM had loaded it."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from pricing_store.models.base import KeyedModel, StringList
from pricing_store.repositories.statements import table_of


def as_loaded(session: AsyncSession, row_class: type[KeyedModel], row: Sequence[Any]) -> Any:
    """Return the session's object for `row` (whole, in table order), holding its values.

    The object the session already has for that primary key is refreshed; otherwise a new
    one joins the session. Either way it has no pending changes, and in-place edits of its
    lists are tracked as after any load.
    """
    values = dict(zip(column_keys(row_class), row, strict=False))
    known = session.identity_map.get(session.identity_key(row_class, (values["id"],)))
    loaded = known if known is not None else row_class()
    state = inspect(loaded)
    for name, value in values.items():
        if isinstance(value, list):
            value = values[name] = StringList(value)
            value._parents[state] = name  # what a load does, so in-place edits are saved
    if known is not None:
        for name, value in values.items():
            set_committed_value(known, name, value)
        return known
    # A new object has no history to keep: its values go straight into its dict, as the
    # ORM's own loading puts them, and make_transient_to_detached marks them all loaded.
    state.dict.update(values)
    make_transient_to_detached(loaded)
    session.add(loaded)
    return loaded


@cache
def column_keys(row_class: type[KeyedModel]) -> tuple[str, ...]:
    """The attribute names of the model's columns, in table order."""
    return tuple(column.key for column in table_of(row_class).columns)
