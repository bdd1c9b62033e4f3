"""The host's fixtures: pricing_store's pytest plugin, then the host's own migrations on top."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from alembic import command
from sqlalchemy.engine import make_url

from tests.helpers import HOST, TENANTS, create_tenants

# The package's plugin: a server, and a database with the package's schema at head.
pytest_plugins = ["pricing_store.testing"]


@pytest.fixture(scope="session")
def host_database_url(pricing_store_database_url: str) -> str:
    """The plugin's database (the package at head), with the host's tenants and migrations.

    The host's own migrations run in-process, on the plugin's URL as it is (an embedded
    server's holds `%2F`, which `alembic_config_for` escapes for Alembic's settings).
    """
    from pricing_store.testing import alembic_config_for  # once pytest has loaded the plugin

    asyncio.run(create_tenants(pricing_store_database_url, *TENANTS))
    command.upgrade(alembic_config_for(pricing_store_database_url, HOST / "alembic.ini"), "head")
    return pricing_store_database_url


@pytest.fixture
async def empty_database(pricing_store_server_url: str) -> AsyncIterator[str]:
    """A database of this test's own with the tenants' schemas and nothing else."""
    from pricing_store.testing.servers import create_database, drop_database

    server = make_url(pricing_store_server_url)
    url = (await create_database(server, "host_app")).render_as_string(hide_password=False)
    await create_tenants(url, *TENANTS)
    yield url
    await drop_database(server, make_url(url))
