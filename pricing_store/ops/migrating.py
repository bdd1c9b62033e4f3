"""What makes running the migrations safe while traffic flows (used by migrations/env.py).

Concurrent migrators queue on one advisory lock, so each revision is applied once. Each
migration waits at most `lock_timeout` for a table lock: blocked by a long transaction, it
fails with a clear message rather than queueing every other query behind its own request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from pricing_store.errors import PricingStoreError

# The project checkout this package runs from, when it runs from one (an editable install).
CHECKOUT = Path(__file__).resolve().parents[2]
# Where the wheel puts the revisions (see pyproject.toml).
PACKAGED_MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"

# Any fixed bigint; the same in every process that migrates this schema.
MIGRATION_LOCK = 7_336_418_290_115_023_451
LOCK_TIMEOUT_VARIABLE = "PRICING_STORE_MIGRATION_LOCK_TIMEOUT"
STATEMENT_TIMEOUT_VARIABLE = "PRICING_STORE_MIGRATION_STATEMENT_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = "5s"
DEFAULT_STATEMENT_TIMEOUT = "5min"
LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"


def timeouts() -> tuple[str, str]:
    """The lock and statement timeouts: the environment's, else the defaults."""
    return (
        os.environ.get(LOCK_TIMEOUT_VARIABLE, DEFAULT_LOCK_TIMEOUT),
        os.environ.get(STATEMENT_TIMEOUT_VARIABLE, DEFAULT_STATEMENT_TIMEOUT),
    )


def serialise_and_bound(connection: Connection) -> None:
    """Inside the migration's transaction: wait for other migrators, then set timeouts."""
    # Taken before the timeouts are set: waiting for another migrator is expected.
    connection.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": MIGRATION_LOCK})
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
            f"migration stopped: a statement ran longer than statement_timeout="
            f"{statement_timeout}; nothing was changed (set {STATEMENT_TIMEOUT_VARIABLE})"
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
