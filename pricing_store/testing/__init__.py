"""A pytest plugin for a host application's suite: a database with the package's schema.

Enable it with `-p pricing_store.testing` or `pytest_plugins = ["pricing_store.testing"]`
in the top-level conftest.py (it is never loaded unasked). Needs the `testing` extra:
`pip install 'pricing-store[testing]'`.

- `pricing_store_server_url`: the admin URL of a real PostgreSQL server, found as the
  package's own tests find one: PRICING_STORE_TEST_DATABASE_URL, else a testcontainers
  PostgreSQL when Docker answers, else an embedded server. Under `CI=true` a run with no
  server fails instead of skipping.
- `pricing_store_database_url`: a fresh database on it, migrated to the package's head
  (its Alembic migrations, never `create_all`), dropped at the end of the session. Run
  your own migrations on top of it.
- `pricing_store_engine`: an engine on that database, for one test.
- `pricing_store_session`: a session in a transaction that is rolled back after the test;
  its own commits become savepoints (SQLAlchemy's "Joining a Session into an External
  Transaction" recipe), so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from pricing_store.db import create_engine, database_url
from pricing_store.testing.servers import (
    NoServerError,
    create_migrated_database,
    drop_database,
    postgres_server,
    server_source,
)

__all__ = [
    "joined_session",
    "pricing_store_database_url",
    "pricing_store_engine",
    "pricing_store_server_url",
    "pricing_store_session",
]


def pytest_report_header() -> str:
    """Say which PostgreSQL the run will use, so a CI log shows which path ran."""
    return f"PostgreSQL for pricing_store: {server_source()}"


def under_ci() -> bool:
    """Whether the run is a CI's (`CI=true`), where a missing server fails the run."""
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def pricing_store_server_url() -> Iterator[str]:
    """An admin URL of a real PostgreSQL server; CI fails instead of skipping without one."""
    try:
        with postgres_server() as url:
            yield url.render_as_string(hide_password=False)
    except NoServerError as error:
        if under_ci():
            pytest.fail(f"no PostgreSQL server for the tests under CI: {error}")
        pytest.skip(f"no PostgreSQL server for the tests: {error}")


@pytest.fixture(scope="session")
def pricing_store_database_url(pricing_store_server_url: str) -> Iterator[str]:
    """A database of this run's own, migrated to the package's head; dropped afterwards."""
    server = database_url(pricing_store_server_url)
    url = asyncio.run(create_migrated_database(server))
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        asyncio.run(drop_database(server, url))


@pytest_asyncio.fixture
async def pricing_store_engine(pricing_store_database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the migrated database, disposed of after the test."""
    engine = create_engine(pricing_store_database_url)
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture
async def pricing_store_session(
    pricing_store_engine: AsyncEngine,
) -> AsyncIterator[AsyncSession]:
    """A session whose work is rolled back after the test."""
    async with joined_session(pricing_store_engine) as session:
        yield session


@contextlib.asynccontextmanager
async def joined_session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session joined to an outer transaction that is rolled back when the block ends."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        async with AsyncSession(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        ) as session:
            yield session
        await transaction.rollback()
