"""What makes running the migrations safe while traffic flows (used by migrations/env.py).

Concurrent migrators queue on one advisory lock, so each revision is applied once. Each
migration waits at most `lock_timeout` for a table lock: blocked by a long transaction, it
fails with a clear message rather than queueing every other query behind its own request.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from alembic import command, context as alembic_context, op as alembic_op
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from pricing_store.checkout import CHECKOUT
from pricing_store.errors import LOCK_NOT_AVAILABLE, QUERY_CANCELED, PricingStoreError
from pricing_store.ops.owned import SCHEMA, VERSION_TABLE

# Where the wheel puts the revisions (see pyproject.toml).
PACKAGED_MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"

# Any fixed bigint; the same in every process that migrates this schema.
MIGRATION_LOCK = 7_336_418_290_115_023_451
LOCK_TIMEOUT_VARIABLE = "PRICING_STORE_MIGRATION_LOCK_TIMEOUT"
STATEMENT_TIMEOUT_VARIABLE = "PRICING_STORE_MIGRATION_STATEMENT_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = "5s"
DEFAULT_STATEMENT_TIMEOUT = "5min"
# Where an earlier version of the package recorded its revisions, sharing it with any host.
SHARED_VERSION_TABLE = "alembic_version"


def timeouts() -> tuple[str, str]:
    """The lock and statement timeouts: the environment's, else the defaults."""
    return (
        os.environ.get(LOCK_TIMEOUT_VARIABLE, DEFAULT_LOCK_TIMEOUT),
        os.environ.get(STATEMENT_TIMEOUT_VARIABLE, DEFAULT_STATEMENT_TIMEOUT),
    )


def serialise_and_bound(connection: Connection) -> None:
    """Inside the migration's transaction: wait for other migrators, then set timeouts.

    Raises:
        alembic.util.CommandError: if the caller's own lock or statement timeout (a host's
            env.py may set one) stopped the wait for another migrator.
    """
    # Taken before the timeouts are set: waiting for another migrator is expected.
    try:
        connection.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": MIGRATION_LOCK})
    except DBAPIError as error:
        setting = {LOCK_NOT_AVAILABLE: "lock_timeout", QUERY_CANCELED: "statement_timeout"}.get(
            getattr(error.orig, "sqlstate", None)
        )
        if setting is None:
            raise
        cause = f"this transaction's own {setting} ran out"
        if setting == "statement_timeout":
            cause += " (or it was cancelled)"
        raise CommandError(
            f"migration stopped: another migrator of pricing_store's tables was still running "
            f"when {cause}; nothing was changed. Retry once it is done, or give the "
            f"transaction a longer {setting}"
        ) from error
    lock_timeout, statement_timeout = timeouts()
    connection.execute(
        text(
            "SELECT set_config('lock_timeout', :lock, true), "
            "set_config('statement_timeout', :run, true)"
        ),
        {"lock": lock_timeout, "run": statement_timeout},
    )


def blocked_message(error: DBAPIError) -> str | None:
    """A readable reason when a timeout stopped the migration; None for other errors."""
    sqlstate = getattr(error.orig, "sqlstate", None)
    lock_timeout, statement_timeout = timeouts()
    if sqlstate == LOCK_NOT_AVAILABLE:
        return (
            f"migration stopped: a table stayed locked by another transaction for longer than "
            f"lock_timeout={lock_timeout}; nothing was changed. Find it in pg_stat_activity, "
            f"then retry (or set {LOCK_TIMEOUT_VARIABLE})"
        )
    if sqlstate == QUERY_CANCELED:
        return (
            f"migration stopped: a statement was cancelled (statement_timeout="
            f"{statement_timeout}, or pg_cancel_backend); nothing was changed "
            f"(set {STATEMENT_TIMEOUT_VARIABLE})"
        )
    return None


def migrations_directory() -> Path:
    """The revisions: packaged inside the wheel, or the checkout's `migrations/`.

    Raises:
        PricingStoreError: if neither is there.
    """
    for candidate in (PACKAGED_MIGRATIONS, CHECKOUT / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise PricingStoreError("no migrations found beside the package: reinstall pricing-store")


def alembic_config(url: str | None = None, **attributes: Any) -> Config:
    """The package's Alembic configuration, usable from any directory, on `url` if given.

    Needs no `alembic.ini`: the settings the project's file holds for its revisions are
    set here. `attributes` go to `config.attributes` (a `connection` to share, say).

    Raises:
        PricingStoreError: if the migrations cannot be found.
    """
    config = Config()
    config.set_main_option("script_location", str(migrations_directory()))
    config.set_main_option("path_separator", "os")
    config.set_main_option("timezone", "UTC")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes.update(attributes)
    return config


QUALIFIED_VERSION_TABLE = f"{SCHEMA}.{VERSION_TABLE}"
# The same table Alembic would create, made here when a shared table's row is carried over.
CREATE_VERSION_TABLE = (
    f"CREATE TABLE {QUALIFIED_VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
    f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"
)
# Foreign keys of other tables (a host's) that point at one of the package's tables.
# Each owner schema-qualified whatever the search_path (regclass::text would drop it).
REFERENCING_SQL = """
    SELECT conname, format('%I.%I', owner_schema.nspname, owner.relname) AS owner_name
    FROM pg_constraint
    JOIN pg_class AS owner ON owner.oid = conrelid
    JOIN pg_namespace AS owner_schema ON owner_schema.oid = owner.relnamespace
    WHERE contype = 'f' AND confrelid = to_regclass(:table) AND conrelid <> confrelid
    ORDER BY conname, owner_name
"""


def exists(connection: Connection, qualified_name: str) -> bool:
    """Whether a table (or other relation) of that schema-qualified name exists."""
    found = connection.scalar(text("SELECT to_regclass(:name)"), {"name": qualified_name})
    return found is not None


def applied_revisions(connection: Connection) -> set[str]:
    """The package's revisions recorded in its own version table; empty before any."""
    if not exists(connection, QUALIFIED_VERSION_TABLE):
        return set()
    return set(connection.scalars(text(f"SELECT version_num FROM {QUALIFIED_VERSION_TABLE}")))


@functools.cache
def head_revisions() -> frozenset[str]:
    """The package's head revision (one, unless its history ever branches)."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def carry_over_version(connection: Connection, revisions: set[str]) -> None:
    """Move the package's revision out of a shared `public.alembic_version` into its own table.

    An earlier version of the package recorded it there, beside any host's. Only rows naming
    one of the package's `revisions` move; the shared table is dropped only when nothing
    else was in it (the package had made it).
    """
    ours = sorted(recorded_in_shared_table(connection, revisions))
    if not ours:
        return
    shared = f"{SCHEMA}.{SHARED_VERSION_TABLE}"
    connection.execute(text(CREATE_VERSION_TABLE))
    connection.execute(
        text(f"INSERT INTO {QUALIFIED_VERSION_TABLE} (version_num) VALUES (:revision)"),
        [{"revision": revision} for revision in ours],
    )
    connection.execute(text(f"DELETE FROM {shared} WHERE version_num = ANY(:ours)"), {"ours": ours})
    if connection.scalar(text(f"SELECT NOT EXISTS (SELECT FROM {shared})")):
        connection.execute(text(f"DROP TABLE {shared}"))


def recorded_in_shared_table(connection: Connection, revisions: set[str] | None = None) -> set[str]:
    """The package's `revisions` (all of them by default) in a shared `alembic_version`.

    An earlier version of the package recorded them there; none are read once the
    package's own version table exists.
    """
    shared = f"{SCHEMA}.{SHARED_VERSION_TABLE}"
    if exists(connection, QUALIFIED_VERSION_TABLE) or not exists(connection, shared):
        return set()
    if revisions is None:
        scripts = ScriptDirectory.from_config(alembic_config())
        revisions = {script.revision for script in scripts.walk_revisions()}
    return set(connection.scalars(text(f"SELECT version_num FROM {shared}"))) & revisions


def drop_version_table_if_empty(connection: Connection) -> None:
    """After a downgrade to base: the package leaves no version table of its own behind."""
    if exists(connection, QUALIFIED_VERSION_TABLE) and not applied_revisions(connection):
        connection.execute(text(f"DROP TABLE {QUALIFIED_VERSION_TABLE}"))


def refuse_removal_if_referenced(connection: Connection, tables: Iterable[str]) -> None:
    """Refuse to drop a table of the package that another table's foreign key points at.

    Raises:
        PricingStoreError: naming every such constraint, in one line; nothing is dropped.
    """
    found = {
        table: [f"{constraint} on {owner}" for constraint, owner in referencing]
        for table in tables
        if (
            referencing := connection.execute(
                text(REFERENCING_SQL), {"table": f"{SCHEMA}.{table}"}
            ).all()
        )
    }
    if found:
        named = "; ".join(
            f"{SCHEMA}.{table} is referenced by {', '.join(keys)}" for table, keys in found.items()
        )
        raise PricingStoreError(
            f"not removed: {named}; drop those foreign keys first (nothing was changed)"
        )


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Bring the package's tables in `public` to `revision` on the caller's connection.

    Made for a host application's env.py (a sync `Connection`, as inside `run_sync`): call
    it in every pass, tenant passes included. When `public` is already at head it runs two
    short statements (a catalog look-up, and a read of the version table whose ACCESS SHARE
    lock lasts until the caller's transaction ends); otherwise it runs the revisions as
    `pricing-store migrate` does (one migrator at a time, bounded lock and statement
    timeouts), recording them in `public.pricing_store_alembic_version`. It commits nothing:
    the caller's transaction does, and the caller's `search_path`, timeouts and Alembic
    context are as they were afterwards.

    Raises:
        alembic.util.CommandError: if a lock or statement timeout stopped the migration.
    """
    if revision == "head" and applied_revisions(connection) == head_revisions():
        return
    with kept_alembic_proxies(), kept_timeouts(connection):
        command.upgrade(alembic_config(connection=connection, configure_logger=False), revision)


@contextlib.contextmanager
def kept_alembic_proxies() -> Iterator[None]:
    """Put back the caller's `alembic.context` and `alembic.op` after a nested Alembic run.

    Alembic keeps the running environment in module globals, which a nested command
    clears on its way out; a host's env.py calling `upgrade` needs its own afterwards.
    """
    saved = [vars(module).get("_proxy") for module in (alembic_context, alembic_op)]
    try:
        yield
    finally:
        for proxy in saved:
            if proxy is not None:
                proxy._install_proxy()


@contextlib.contextmanager
def kept_timeouts(connection: Connection) -> Iterator[None]:
    """Restore the transaction's lock and statement timeouts that the migration set."""
    before = connection.execute(
        text("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')")
    ).one()
    yield
    connection.execute(
        text(
            "SELECT set_config('lock_timeout', :lock, true), "
            "set_config('statement_timeout', :run, true)"
        ),
        {"lock": before[0], "run": before[1]},
    )
