"""`python -m pricing_store.ops.roles` (`make roles`): create the owner and app roles.

Runs `roles.sql` beside this file on DATABASE_URL, which must be an administrator's.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg

from pricing_store.db import driver_settings

ROLES_SQL = Path(__file__).with_name("roles.sql")
OWNER = "pricing_store_owner"
APP = "pricing_store_app"


async def create_roles(url: str | None = None) -> None:
    """Create (or bring up to date) the two roles and their grants on the URL's database."""
    settings = driver_settings(url)
    connection = await asyncpg.connect(settings.dsn(), **settings.connect_args)
    try:
        await connection.execute(ROLES_SQL.read_text())
    finally:
        await connection.close()


def main() -> None:
    """Apply roles.sql on DATABASE_URL and say so."""
    asyncio.run(create_roles())
    print(f"roles {OWNER} and {APP} in place", file=sys.stderr)


if __name__ == "__main__":
    main()
