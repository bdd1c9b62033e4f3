"""pytest-alembic's built-in migration tests, run unchanged against an AsyncEngine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pytest_alembic.config import Config
from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from pricing_store.db import create_engine
from tests.helpers import ROOT

__all__ = [
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]


@pytest.fixture
def alembic_config() -> Config:
    return Config(config_options={"file": str(ROOT / "alembic.ini")})


@pytest.fixture
async def alembic_engine(empty_database: URL) -> AsyncIterator[AsyncEngine]:
    # pytest-alembic drives the engine from event loops of its own: no pooled connections.
    engine = create_engine(empty_database, poolclass=NullPool)
    yield engine
    await engine.dispose()
