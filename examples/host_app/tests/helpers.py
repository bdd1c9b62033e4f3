"""What the host's tests run: its alembic, pricing-store, and plain SQL, each on its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

HOST = Path(__file__).resolve().parents[1]
TENANTS = ("user_1", "user_2")


def run(*command: str, url: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A command in a process of its own, as an operator or a deploy step runs it."""
    done = subprocess.run(
        command,
        cwd=HOST,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def host_alembic(url: str, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The host's own `alembic ...` (its alembic.ini, its env.py with the tenant loop)."""
    return run(sys.executable, "-m", "alembic", *arguments, url=url, check=check)


def pricing_store_cli(
    url: str, *arguments: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """The package's `pricing-store ...` on the same database."""
    return run(sys.executable, "-m", "pricing_store.cli", *arguments, url=url, check=check)


async def sql(url: str, statement: str, *arguments: object) -> list[asyncpg.Record]:
    """Run one statement on `url` in a connection of its own; its rows."""
    plain = make_url(url).set(drivername="postgresql")
    connection = await asyncpg.connect(plain.render_as_string(hide_password=False))
    try:
        rows: list[asyncpg.Record] = await connection.fetch(statement, *arguments)
        return rows
    finally:
        await connection.close()


async def create_tenants(url: str, *tenants: str) -> None:
    """What signing up a tenant does: a schema of its own."""
    for tenant in tenants:
        await sql(url, f"CREATE SCHEMA {tenant}")
