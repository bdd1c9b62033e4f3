"""Engine and session factory; DATABASE_URL handling. Nothing here connects at import."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from pricing_store.errors import InvalidValueError

DATABASE_URL_VARIABLE = "DATABASE_URL"
ASYNC_DRIVER = "postgresql+asyncpg"
ACCEPTED_SCHEMES = frozenset({"postgres", "postgresql", ASYNC_DRIVER})


def database_url(url: str | URL | None = None) -> URL:
    """Return `url`, or DATABASE_URL, as a URL driven by asyncpg.

    `postgres://`, `postgresql://` and `postgresql+asyncpg://` are all accepted.

    Raises:
        InvalidValueError: if no URL is given and DATABASE_URL is unset, or the URL is not
            a PostgreSQL URL.
    """
    raw = url if url is not None else os.environ.get(DATABASE_URL_VARIABLE)
    if not raw:
        raise InvalidValueError("url", f"no URL given and {DATABASE_URL_VARIABLE} is not set")
    try:
        parsed = make_url(raw)
    except ArgumentError:
        raise InvalidValueError("url", "is not a database URL") from None
    if parsed.drivername not in ACCEPTED_SCHEMES:
        raise InvalidValueError(
            "url", f"must be a PostgreSQL URL (postgresql://...), not {parsed.drivername}://"
        )
    return parsed.set(drivername=ASYNC_DRIVER)


def create_engine(url: str | URL | None = None, **options: Any) -> AsyncEngine:
    """Create an async engine on asyncpg; `options` go to SQLAlchemy's `create_async_engine`.

    Raises:
        InvalidValueError: if the URL is missing or not a PostgreSQL URL.
    """
    return _create_async_engine(database_url(url), **options)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Create sessions whose objects stay readable after commit, without lazy I/O."""
    return async_sessionmaker(engine, expire_on_commit=False)
