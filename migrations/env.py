"""Alembic environment: sync revisions over an async asyncpg engine.

The URL comes from DATABASE_URL. A caller may instead put a `Connection`, `AsyncConnection`,
`Engine` or `AsyncEngine` in `config.attributes["connection"]` (connection sharing, as tests,
pytest-alembic and `pricing_store.ops.upgrade` do). The revisions are recorded in the
package's own `public.pricing_store_alembic_version`, whatever the role's `search_path`, so a
host application's `alembic_version` beside it is never read or written.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, pool
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pricing_store.db import create_engine
from pricing_store.models import Base
from pricing_store.ops.drift import compare_options
from pricing_store.ops.migrating import (
    blocked_message,
    carry_over_version,
    drop_version_table_if_empty,
    refuse_removal_if_referenced,
    serialise_and_bound,
)
from pricing_store.ops.owned import MODEL_TABLES, SCHEMA, VERSION_TABLE

config = context.config

# A caller that drives Alembic from Python (tests) keeps its own logging set-up.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

CONFIGURE_OPTIONS: dict[str, Any] = {
    "target_metadata": Base.metadata,
    "version_table": VERSION_TABLE,
    "version_table_schema": SCHEMA,
}


def run_migrations_offline() -> None:
    """Emit the SQL to stdout (`alembic upgrade head --sql`); no database is needed."""
    context.configure(dialect_name="postgresql", literal_binds=True, **CONFIGURE_OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations(connection: Connection) -> None:
    """Run the revisions on a sync connection (inside `run_sync` for async drivers).

    One migrator at a time, each table lock waited for at most lock_timeout (see
    pricing_store.ops.migrating). A revision an earlier version of the package recorded in
    a shared `alembic_version` is carried over first. Going back to base removes the
    version table too, and is refused while another table's foreign key needs ours.
    """
    context.configure(connection=connection, **CONFIGURE_OPTIONS, **compare_options(connection))
    with context.begin_transaction():
        serialise_and_bound(connection)
        carry_over_version(
            connection, {script.revision for script in context.script.walk_revisions()}
        )
        if removing_everything():
            refuse_removal_if_referenced(connection, MODEL_TABLES)
        try:
            context.run_migrations()
        except DBAPIError as error:
            message = blocked_message(error)
            if message is None:
                raise
            raise CommandError(message) from error
        drop_version_table_if_empty(connection)


def removing_everything() -> bool:
    """Whether this run goes down to base (the destination of `downgrade base` is None)."""
    try:
        return context.get_revision_argument() is None
    except KeyError:  # a command with no destination (autogenerate, check)
        return False


async def run_async_migrations(engine: AsyncEngine) -> None:
    """Run the revisions on a fresh connection of `engine`, committing at the end."""
    async with engine.begin() as connection:
        await connection.run_sync(run_migrations)


def run_in_new_event_loop(engine: AsyncEngine) -> None:
    """Drive `engine` from a loop of our own, in a worker thread if one already runs here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(run_async_migrations(engine))
        return
    with ThreadPoolExecutor(max_workers=1) as worker:
        worker.submit(asyncio.run, run_async_migrations(engine)).result()


def run_migrations_online() -> None:
    """Run against the caller's connectable, or an engine on DATABASE_URL."""
    connectable = config.attributes.get("connection")
    if isinstance(connectable, Connection):
        run_migrations(connectable)
    elif isinstance(connectable, AsyncConnection):
        # Usable only inside the caller's `await connection.run_sync(...)`.
        run_migrations(connectable.sync_connection)  # type: ignore[arg-type]
    elif isinstance(connectable, Engine):
        with connectable.begin() as connection:
            run_migrations(connection)
    elif isinstance(connectable, AsyncEngine):
        run_in_new_event_loop(connectable)
    else:
        engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
        run_in_new_event_loop(engine)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
