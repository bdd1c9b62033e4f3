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
- `pricing_store_empty_tables`: after the test, deletes every row of the package's tables.
  Rows that `PricingLookup.get_or_generate` stores are committed on the lookup's own
  connections, which no session's rollback reaches: a test that generates uses it.
- `alembic_config_for(url, ini)`: an Alembic `Config` for your own migrations on the
  plugin's database (its URL may hold `%`, which Alembic's settings would take for
  interpolation).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from alembic.config import Config
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
    "alembic_config_for",
    "joined_session",
    "pricing_store_database_url",
    "pricing_store_empty_tables",
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


# The package's tables, in an order that deletes no row another still references.
PACKAGE_TABLES = ("public.models", "public.brand_groups", "public.pricing_store_generation_leases")


@pytest_asyncio.fixture
async def pricing_store_empty_tables(pricing_store_database_url: str) -> AsyncIterator[None]:
    """After the test, no row in the package's tables, whoever committed it.

    Delete your own rows that reference them (a foreign key to `brand_groups`) in the test;
    one left behind makes this fixture fail, naming its constraint.
    """
    yield
    engine = create_engine(pricing_store_database_url)
    try:
        async with engine.begin() as connection:
            # A session still holding one of those rows fails the test, never hangs it.
            await connection.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
            for table in PACKAGE_TABLES:
                await connection.exec_driver_sql(f"DELETE FROM {table}")
    finally:
        await engine.dispose()


def alembic_config_for(url: str, ini: str | os.PathLike[str] = "alembic.ini") -> Config:
    """Your Alembic configuration, pointed at `url` (`sqlalchemy.url`), `%` escaped.

    `ini` is read, and its relative paths taken, from the working directory, as the
    `alembic` command does: run pytest where your alembic.ini is, or pass its full path.

    For your migrations on top of the plugin's database:
    `command.upgrade(alembic_config_for(pricing_store_database_url), "head")`.
    """
    config = Config(str(ini))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config
