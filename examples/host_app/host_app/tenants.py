"""Tenants: one `user_N` schema each, beside the shared `public`."""

from __future__ import annotations

import re

from sqlalchemy import Connection, text

SHARED = "public"
TENANT_NAME = re.compile(r"user_[0-9]+")


def tenant_schemas(connection: Connection) -> list[str]:
    """Every tenant's schema in the database, in order."""
    names = connection.scalars(
        text("SELECT nspname FROM pg_namespace WHERE nspname ~ '^user_[0-9]+$' ORDER BY nspname")
    )
    return list(names)


def checked_tenant(name: str) -> str:
    """A tenant's schema name, refused unless it is `user_N` (it goes into SQL).

    Raises:
        ValueError: for any other name.
    """
    if not TENANT_NAME.fullmatch(name):
        raise ValueError(f"tenant: must be user_N, not {name!r}")
    return name
