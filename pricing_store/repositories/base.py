"""A small generic repository: create, page and count rows of one model."""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from sqlalchemy import func, inspect, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstanceState

from pricing_store.errors import InvalidValueError, translate
from pricing_store.models import BrandGroup, Model
from pricing_store.validation import non_negative_int

ModelT = TypeVar("ModelT", BrandGroup, Model)


class Repository(Generic[ModelT]):
    """Data access for one model inside the caller's session: flushes, never commits."""

    model_type: ClassVar[type[BrandGroup | Model]]

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, item: ModelT) -> ModelT:
        """Insert `item` and return it with its id and server-set columns loaded.

        The insert runs in a savepoint, so a failure leaves the caller's transaction usable
        and the work it already did in place.

        Raises:
            InvalidValueError: if `item` is not of this repository's model or a required
                column was never set.
            DuplicateKeyError: if a row with the same key exists.

        """
        self._require_complete(item)
        try:
            async with self.session.begin_nested():
                self.session.add(item)
        except DBAPIError as error:
            package_error = translate(error)
            if package_error is None:
                raise
            raise package_error from error
        return item

    async def get_all(self, limit: int = 100, *, offset: int = 0) -> list[ModelT]:
        """Return a page of rows, newest first; the order ends in `id` so pages never overlap.

        Raises:
            InvalidValueError: if `limit` or `offset` is not a non-negative integer.

        """
        statement = (
            select(self.model_type)
            .order_by(self.model_type.created_at.desc(), self.model_type.id.desc())
            .limit(non_negative_int("limit", limit))
            .offset(non_negative_int("offset", offset))
        )
        return list(await self.session.scalars(statement))

    async def count(self) -> int:
        """Count every row of the table."""
        total = await self.session.scalar(select(func.count()).select_from(self.model_type))
        return int(total or 0)

    def _require_complete(self, item: object) -> None:
        if not isinstance(item, self.model_type):
            raise InvalidValueError(
                "item",
                f"must be a {self.model_type.__name__}, not {type(item).__name__}",
            )
        state: InstanceState[ModelT] = inspect(item)
        for column in self.model_type.__table__.columns:
            defaulted = column.primary_key or column.server_default is not None
            if not defaulted and column.key not in state.dict:
                raise InvalidValueError(column.key, "is required")
