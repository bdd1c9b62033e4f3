"""Test fixtures: a real PostgreSQL, a database per run, the schema from the migrations.

The server and the run's migrated database come from the package's own pytest plugin,
`pricing_store.testing` (loaded with `-p` in pyproject.toml), as a host's suite gets them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pricing_store.db import create_engine, create_session_factory, database_url
from pricing_store.ops.roles import APP, create_roles
from pricing_store.testing import joined_session
from pricing_store.testing.servers import throwaway_database
from tests.helpers import alembic_config
from tests.provision import OwnServer, pgbouncer_in_front_of

AS_APP_ROLE = os.environ.get("PRICING_STORE_TEST_ROLE") == "app"


@pytest.fixture(scope="session")
def server_url(pricing_store_server_url: str) -> URL:
    """An admin URL of a real PostgreSQL server; CI fails instead of skipping without one."""
    return database_url(pricing_store_server_url)


@pytest.fixture(scope="session")
async def admin_url(pricing_store_database_url: str) -> URL:
    """This run's own database, migrated to head, as its administrator; dropped afterwards.

    With PRICING_STORE_TEST_ROLE=app the least-privilege roles are created in it too, and
    `engine` connects as the app role (the server must trust it, as local servers do).
    """
    if AS_APP_ROLE:
        await create_roles(pricing_store_database_url)
    return database_url(pricing_store_database_url)


@pytest.fixture(scope="session")
async def engine(admin_url: URL) -> AsyncIterator[AsyncEngine]:
    """The engine the package is used through: the administrator's, or the app role's."""
    engine = create_engine(admin_url.set(username=APP, password=None) if AS_APP_ROLE else admin_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def admin_engine(admin_url: URL) -> AsyncIterator[AsyncEngine]:
    """For what tests do behind the package's back (emptying tables, raw changes)."""
    engine = create_engine(admin_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session whose work is rolled back after the test (the plugin's recipe)."""
    async with joined_session(engine) as test_session:
        yield test_session


@pytest.fixture
async def session_factory(
    engine: AsyncEngine, admin_engine: AsyncEngine
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Independent sessions that really commit, for concurrency tests; tables emptied after."""
    yield create_session_factory(engine)
    async with admin_engine.begin() as connection:
        await connection.execute(text("TRUNCATE public.brand_groups, public.models"))


@pytest.fixture
async def empty_database(server_url: URL) -> AsyncIterator[URL]:
    """A fresh database with no schema at all, for migration tests."""
    async with throwaway_database(server_url, prefix="pricing_store_migrations") as url:
        yield url


@pytest.fixture
def run_alembic(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Run an Alembic command on DATABASE_URL, as `alembic upgrade head` on the CLI does."""

    def run(url: URL, name: str, *arguments: str, **options: Any) -> None:
        monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
        getattr(command, name)(alembic_config(), *arguments, **options)

    return run


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[OwnServer]:
    """A PostgreSQL server this test alone uses, and may stop and start."""
    tmp_path.chmod(0o755)  # the embedded server may run as another user
    server = OwnServer(tmp_path)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def own_database(own_server: OwnServer, run_alembic: Callable[..., None]) -> URL:
    """The own server's `postgres` database, migrated to head."""
    run_alembic(own_server.url, "upgrade", "head")
    return own_server.url


@pytest.fixture(scope="session")
def pgbouncer(server_url: URL) -> Iterator[URL]:
    """A real PgBouncer in transaction mode in front of the test server (its admin URL).

    Without the binary the tests that need it skip, except under CI, where they fail.
    """
    binary = shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if Path(path).exists()),
        None,
    )
    if binary is None:
        message = "pgbouncer is not installed (Debian: apt-get install pgbouncer)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    with pgbouncer_in_front_of(server_url, binary) as url:
        yield url
