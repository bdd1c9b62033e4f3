"""The declarative base: naming convention, eager server defaults, shared column types."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, SupportsIndex, overload

from sqlalchemy import DateTime, FromClause, MetaData, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.mutable import MutableList
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pricing_store.validation import (
    BRAND_LENGTH,
    GROUP_NAME_LENGTH,
    KeyRule,
    list_length,
    string_element,
    string_elements,
)

# Names match what the seed's DDL gives PostgreSQL (`<table>_pkey`) or names itself.
NAMING_CONVENTION = {
    "pk": "%(table_name)s_pkey",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ix": "idx_%(table_name)s_%(column_0_N_name)s",
}

# Where every table of the package lives: the shared schema of a host's database.
SCHEMA = "public"

EMPTY_JSONB_ARRAY = text("'[]'::jsonb")
NOW = text("CURRENT_TIMESTAMP")

FieldRule = Callable[[str, Any], Any]

# The Brand×Group key both tables share; each model adds its own rules.
KEY_RULES: dict[str, FieldRule] = {
    "brand": KeyRule(BRAND_LENGTH).check,
    "group_name": KeyRule(GROUP_NAME_LENGTH).check,
}


class KeyedModel(Protocol):
    """What the write and read helpers need of a model: its table, rules and natural key.

    `BrandGroup` and `Model` are KeyedModels; helpers take `type[KeyedModel]` (or a type
    variable bound to it), so a third table would need no change to them.
    """

    __table__: ClassVar[FromClause]
    field_rules: ClassVar[Mapping[str, FieldRule]]
    natural_key: ClassVar[tuple[str, ...]]


class Base(DeclarativeBase):
    """Base of the package's models: every table lives in the shared `public` schema."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # Server-set columns (ids, timestamps) come back through RETURNING on INSERT and
    # UPDATE, so reading them after a flush never needs lazy I/O.
    __mapper_args__ = MappingProxyType({"eager_defaults": True})


class Timestamps:
    """`created_at` and `updated_at`, set by the database; `updated_at` moves on ORM updates."""

    # sort_order keeps them last, where the seed's DDL puts them.
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=NOW, sort_order=1
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=NOW, onupdate=NOW, sort_order=1
    )


class StringList(MutableList[str]):
    """A JSONB array of strings that validates in-place edits and marks them for saving."""

    def _field(self) -> str:
        # `_parents` maps each owning object's state to the attribute name holding this list.
        return next(iter(self._parents.values()), "list")

    @overload
    def __setitem__(self, index: SupportsIndex, value: str) -> None: ...
    @overload
    def __setitem__(self, index: slice, value: Iterable[str]) -> None: ...
    def __setitem__(self, index: SupportsIndex | slice, value: Any) -> None:
        if isinstance(index, slice):
            replaced = len(self[index])
            super().__setitem__(
                index, string_elements(self._field(), value, joining=len(self) - replaced)
            )
        else:
            super().__setitem__(index, string_element(self._field(), value))

    def append(self, value: str) -> None:
        """Validate, then append."""
        super().extend(string_elements(self._field(), [value], joining=len(self)))

    def insert(self, index: SupportsIndex, value: str) -> None:
        """Validate, then insert."""
        list_length(self._field(), len(self) + 1)
        super().insert(index, string_element(self._field(), value))

    def extend(self, values: Iterable[str]) -> None:
        """Validate every value, then extend."""
        super().extend(string_elements(self._field(), values, joining=len(self)))

    def __iadd__(self, values: Iterable[str]) -> StringList:  # type: ignore[override,misc]
        self.extend(values)
        return self


STRING_LIST_JSONB = StringList.as_mutable(JSONB)
