"""The host's env.py: a shared pass on `public`, then one pass per tenant schema.

Each pass records its revisions in its own schema's `alembic_version`, and calls
`pricing_store.ops.upgrade` first: the package's tables land in `public` (recorded in
`public.pricing_store_alembic_version`) before any revision of the host references them,
and in every later pass the call is two short statements (a catalog look-up, and a read of
the package's version table under the weakest lock there is).

Autogenerate compares one tenant at a time, with the shared tables:
`alembic check -x tenant=user_1`.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from host_app.models import HostBase
from host_app.tenants import SHARED, checked_tenant, tenant_schemas
from sqlalchemy import Connection, pool
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import pricing_store.ops

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    """DATABASE_URL, as the asyncpg driver reads it."""
    url = config.get_main_option("sqlalchemy.url") or os.environ["DATABASE_URL"]
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


def engine_for(schema: str) -> AsyncEngine:
    """An engine whose connections see `schema` alone (revisions name `public` themselves).

    With `public` off the search_path, autogenerate reflects the shared tables, and the
    foreign keys that point at them, as `public.*`, as the models declare them.
    """
    return create_async_engine(
        database_url(),
        poolclass=pool.NullPool,
        connect_args={"server_settings": {"search_path": schema}},
    )


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """What autogenerate compares: this pass's schema and `public`, no version table.

    Nothing of pricing_store's either: its own filter says what that is.
    """
    if type_ == "schema":
        return name in (None, SHARED)
    if type_ == "table" and name == "alembic_version":
        return False
    return pricing_store.ops.include_name(name, type_, parent_names)


def run_pass(connection: Connection, schema: str) -> None:
    """One pass: the package's migrations, then the host's own for `schema`."""
    context.configure(
        connection=connection,
        target_metadata=HostBase.metadata,
        version_table_schema=schema,
        include_schemas=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        pricing_store.ops.upgrade(connection)
        context.run_migrations(tenant=None if schema == SHARED else schema)


async def run_passes(schemas: list[str] | None) -> None:
    """The shared pass and every tenant's (or only the schemas asked for)."""
    if schemas is None:
        async with engine_for(SHARED).connect() as connection:
            tenants = await connection.run_sync(tenant_schemas)
        schemas = [SHARED, *tenants]
    for schema in schemas:
        engine = engine_for(schema)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(run_pass, schema)
                await connection.commit()
        finally:
            await engine.dispose()


def run_migrations_online() -> None:
    """Every pass, or `-x tenant=user_N` alone (as autogenerate needs)."""
    tenant = context.get_x_argument(as_dictionary=True).get("tenant")
    asyncio.run(run_passes([checked_tenant(tenant)] if tenant else None))


run_migrations_online()
