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

CHECKOUT = Path(__file__).resolve().parents[1]

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


def alembic_config(url: str | None, **attributes: Any) -> Config:
    """The project's Alembic configuration, from any directory, on `url` if given.

    `attributes` go to `config.attributes` (a `connection` to share, say).

    Raises:
        PricingStoreError: if the migrations cannot be found.
    """
    ini = CHECKOUT / "alembic.ini"
    if not ini.is_file():
        raise PricingStoreError(f"no migrations: {ini} not found")
    config = Config(str(ini))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes.update(attributes)
    return config
