"""The embedded development database that `make migrate` falls back to."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from pricing_store.ops import devdb
from tests.helpers import TABLES_AT_HEAD
from tests.provision import asyncpg_dsn


async def test_dev_database_starts_migrates_and_stops(
    tmp_path: Path, run_alembic: Callable[..., None]
) -> None:
    url = devdb.ensure_running(tmp_path / "pgdata")
    try:
        assert devdb.ensure_running(tmp_path / "pgdata") == url
        run_alembic(make_url(url), "upgrade", "head")

        connection = await asyncpg.connect(asyncpg_dsn(make_url(url)))
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
        await connection.close()
        assert {row["tablename"] for row in tables} == TABLES_AT_HEAD
    finally:
        devdb.stop(tmp_path / "pgdata")

    with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
        await asyncpg.connect(asyncpg_dsn(make_url(url)), timeout=5)


def test_stopping_a_stopped_database_starts_nothing(tmp_path: Path) -> None:
    assert devdb.stop(tmp_path / "never") is False
    assert not (tmp_path / "never").exists()

    devdb.ensure_running(tmp_path / "pgdata")
    assert devdb.stop(tmp_path / "pgdata") is True
    assert devdb.stop(tmp_path / "pgdata") is False
    assert not devdb.is_running(tmp_path / "pgdata")
