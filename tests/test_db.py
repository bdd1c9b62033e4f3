"""Engine and session factory creation."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pricing_store import InvalidValueError, PricingLookup, create_engine, create_session_factory
from pricing_store.db import database_url, driver_settings


@pytest.mark.parametrize(
    "url",
    [
        "postgres://app:secret@db.internal:5433/pricing",
        "postgresql://app:secret@db.internal:5433/pricing",
        "postgresql+asyncpg://app:secret@db.internal:5433/pricing",
    ],
)
def test_each_postgres_scheme_is_driven_by_asyncpg(url: str) -> None:
    engine = create_engine(url)

    assert engine.dialect.driver == "asyncpg"
    assert engine.url.host == "db.internal"
    assert engine.url.port == 5433
    assert engine.url.database == "pricing"


def test_url_defaults_to_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://app@db.internal/from_env")

    assert create_engine().url.database == "from_env"


def test_missing_url_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)

    with pytest.raises(InvalidValueError, match=r"^url: no URL given and DATABASE_URL is not set"):
        create_engine()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://app@db/pricing", "^url: must be a PostgreSQL URL"),
        ("postgresql+psycopg2://app@db/pricing", "^url: must be a PostgreSQL URL"),
        ("not a url", "^url: is not a database URL"),
    ],
)
def test_other_urls_are_rejected(url: str, message: str) -> None:
    with pytest.raises(InvalidValueError, match=message):
        database_url(url)


def test_creating_an_engine_does_not_connect() -> None:
    # Nothing listens on port 1: creating the engine must still succeed.
    create_engine("postgresql://nobody@127.0.0.1:1/none")


async def test_session_factory_keeps_objects_readable_after_commit(engine: AsyncEngine) -> None:
    factory = create_session_factory(engine)

    async with factory() as session:
        value = await session.scalar(text("SELECT 1"))
        await session.commit()

    assert value == 1
    assert factory.kw["expire_on_commit"] is False


def test_libpqs_and_sqlalchemys_multi_host_urls_mean_the_same() -> None:
    libpq = database_url("postgresql://u:secret@h1:5433,h2:5434/pricing")
    sqlalchemy = database_url("postgresql+asyncpg://u:secret@/pricing?host=h1:5433&host=h2:5434")
    assert libpq == sqlalchemy
    assert libpq.query["target_session_attrs"] == "read-write"  # writes find the primary
    settings = driver_settings("postgresql://u:secret@h1:5433,h2:5434/pricing")
    assert settings.dsn() == (
        "postgresql://u:secret@h1:5433,h2:5434/pricing?target_session_attrs=read-write"
    )
    assert settings.where() == "h1:5433,h2:5434/pricing"
    chosen = database_url("postgresql://h1,h2/pricing?target_session_attrs=any")
    assert chosen.query["target_session_attrs"] == "any"  # as the user said


async def test_a_caching_lookup_refuses_a_multi_host_url_that_may_reach_a_standby() -> None:
    anywhere = create_engine("postgresql://h1:5433,h2:5434/pricing?target_session_attrs=any")
    try:
        with pytest.raises(InvalidValueError, match="target_session_attrs=read-write"):
            PricingLookup(anywhere, cache_size=10)
        PricingLookup(anywhere)  # uncached reads may go to any server
    finally:
        await anywhere.dispose()


async def test_a_urls_application_name_names_every_connection_the_lookups_too(
    engine: AsyncEngine,
) -> None:
    named = create_engine(engine.url.update_query_dict({"application_name": "pricing_report"}))
    try:
        async with named.connect() as connection:
            setting = await connection.scalar(text("SELECT current_setting('application_name')"))
        assert setting == "pricing_report"
        async with PricingLookup(named, cache_size=10) as lookup:
            await lookup.get("No such brand", "jeans")
            async with engine.connect() as connection:
                names = await connection.scalars(
                    text(
                        "SELECT application_name FROM pg_stat_activity "
                        "WHERE application_name LIKE 'pricing%' AND pid <> pg_backend_pid() "
                        "AND datname = current_database()"
                    )
                )
                assert set(names) == {"pricing_report"}  # none left as "pricing_store lookup"
    finally:
        await named.dispose()
