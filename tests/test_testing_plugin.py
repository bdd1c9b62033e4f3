"""The pytest plugin's helpers for a host's suite: its Alembic config, its clean-up fixture."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.config import Config

from pricing_store.testing import alembic_config_for

EMBEDDED_URL = "postgresql://postgres@/pricing?host=%2Ftmp%2Fpg-socket&port=5432"


def test_an_embedded_servers_url_reaches_alembic_as_it_is(tmp_path: Path) -> None:
    ini = tmp_path / "alembic.ini"
    ini.write_text("[alembic]\nscript_location = migrations\n")
    with pytest.raises(ValueError, match="interpolation"):  # what a host ran into
        Config(str(ini)).set_main_option("sqlalchemy.url", EMBEDDED_URL)

    config = alembic_config_for(EMBEDDED_URL, ini)

    assert config.get_main_option("sqlalchemy.url") == EMBEDDED_URL
    assert config.get_main_option("script_location") == "migrations"


HOST_SUITE = """
import pytest
from sqlalchemy import text

from pricing_store import PricingLookup


class LLM:
    async def brand_group(self, brand, group):
        return {"base_price": "30.00"}

    async def model(self, brand, group, model):
        return {"coefficient": "1.50"}


async def rows(engine):
    async with engine.connect() as connection:
        return [
            await connection.scalar(text(f"SELECT count(*) FROM public.{table}"))
            for table in ("brand_groups", "models")
        ]


@pytest.mark.usefixtures("pricing_store_empty_tables")
async def test_1_generates(pricing_store_engine, pricing_store_session):
    async with PricingLookup(pricing_store_engine, generator=LLM()) as lookup:
        await lookup.get_or_generate("Leaked", "jeans", "501")
    assert await rows(pricing_store_engine) == [1, 1]  # committed: no rollback reaches them


async def test_2_starts_empty(pricing_store_engine):
    assert await rows(pricing_store_engine) == [0, 0]
"""


def test_rows_a_lookup_generated_are_gone_after_the_test_that_made_them(
    pytester: pytest.Pytester,
) -> None:
    """As a host's suite would run it: the plugin, pytest-asyncio's settings, two tests."""
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "asyncio_default_test_loop_scope = function\n"
    )
    pytester.makepyfile(test_host=HOST_SUITE)
    result = pytester.runpytest_subprocess("-p", "pricing_store.testing", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
