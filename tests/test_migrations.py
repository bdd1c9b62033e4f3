"""The Alembic revisions and env.py, on real databases of their own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from sqlalchemy import Connection
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from pricing_store.db import create_engine
from pricing_store.ops import alembic_config as alembic_config_of_package
from pricing_store.ops.drift import schema_differences
from tests.helpers import (
    HEAD,
    LEASES,
    REVISIONS,
    ROOT,
    SEED_TABLES,
    TABLES_AT_HEAD,
    alembic_config,
    execute,
    fetch,
    tables_in,
)
from tests.provision import asyncpg_dsn

RunAlembic = Callable[..., None]
VERSION_SQL = "SELECT version_num FROM public.pricing_store_alembic_version"

# What `pg_dump --schema-only` prints for the seed's DDL, read from the same catalog functions.
SEED_COLUMNS = {
    "brand_groups": [
        ("id", "integer", "nextval('brand_groups_id_seq'::regclass)", True),
        ("brand", "character varying(100)", None, True),
        ("group_name", "character varying(50)", None, True),
        ("base_price", "numeric(10,2)", None, True),
        ("expected_origins", "jsonb", "'[]'::jsonb", True),
        ("expected_decades", "jsonb", "'[]'::jsonb", True),
        ("expected_trends", "jsonb", "'[]'::jsonb", True),
        ("condition_sensitivity", "numeric(3,2)", "1.0", True),
        ("created_at", "timestamp with time zone", "CURRENT_TIMESTAMP", True),
        ("updated_at", "timestamp with time zone", "CURRENT_TIMESTAMP", True),
    ],
    "models": [
        ("id", "integer", "nextval('models_id_seq'::regclass)", True),
        ("brand", "character varying(100)", None, True),
        ("group_name", "character varying(50)", None, True),
        ("model", "character varying(100)", None, True),
        ("coefficient", "numeric(4,2)", "1.0", True),
        ("expected_features", "jsonb", "'[]'::jsonb", True),
        ("created_at", "timestamp with time zone", "CURRENT_TIMESTAMP", True),
        ("updated_at", "timestamp with time zone", "CURRENT_TIMESTAMP", True),
    ],
}
SEED_CONSTRAINTS = {
    "brand_groups": {
        ("brand_groups_pkey", "PRIMARY KEY (id)"),
        ("uq_brand_groups_brand_group", "UNIQUE (brand, group_name)"),
        (
            "ck_brand_groups_base_price",
            "CHECK (((base_price >= 5.00) AND (base_price <= 500.00)))",
        ),
        (
            "ck_brand_groups_sensitivity",
            "CHECK (((condition_sensitivity >= 0.5) AND (condition_sensitivity <= 1.5)))",
        ),
    },
    "models": {
        ("models_pkey", "PRIMARY KEY (id)"),
        ("uq_models_brand_group_model", "UNIQUE (brand, group_name, model)"),
        ("ck_models_coefficient", "CHECK (((coefficient >= 0.5) AND (coefficient <= 3.0)))"),
    },
}
SEED_INDEXES = {
    "brand_groups": {
        "CREATE UNIQUE INDEX brand_groups_pkey ON public.brand_groups USING btree (id)",
        "CREATE UNIQUE INDEX uq_brand_groups_brand_group "
        "ON public.brand_groups USING btree (brand, group_name)",
        "CREATE INDEX idx_brand_groups_brand ON public.brand_groups USING btree (brand)",
        "CREATE INDEX idx_brand_groups_group ON public.brand_groups USING btree (group_name)",
        "CREATE INDEX idx_brand_groups_created_at "
        "ON public.brand_groups USING btree (created_at DESC)",
    },
    "models": {
        "CREATE UNIQUE INDEX models_pkey ON public.models USING btree (id)",
        "CREATE UNIQUE INDEX uq_models_brand_group_model "
        "ON public.models USING btree (brand, group_name, model)",
        "CREATE INDEX idx_models_brand ON public.models USING btree (brand)",
        "CREATE INDEX idx_models_group ON public.models USING btree (group_name)",
        "CREATE INDEX idx_models_brand_group ON public.models USING btree (brand, group_name)",
        "CREATE INDEX idx_models_created_at ON public.models USING btree (created_at DESC)",
    },
}

# The seed's DDL as an operator might have run it by hand, CHECKs unnamed.
HAND_MADE_SEED_TABLES = (
    """CREATE TABLE public.brand_groups (
        id SERIAL PRIMARY KEY,
        brand VARCHAR(100) NOT NULL,
        group_name VARCHAR(50) NOT NULL,
        base_price DECIMAL(10,2) NOT NULL CHECK (base_price >= 5.00 AND base_price <= 500.00),
        expected_origins JSONB DEFAULT '[]'::jsonb NOT NULL,
        expected_decades JSONB DEFAULT '[]'::jsonb NOT NULL,
        expected_trends JSONB DEFAULT '[]'::jsonb NOT NULL,
        condition_sensitivity DECIMAL(3,2) NOT NULL DEFAULT 1.0
            CHECK (condition_sensitivity >= 0.5 AND condition_sensitivity <= 1.5),
        created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL,
        CONSTRAINT uq_brand_groups_brand_group UNIQUE (brand, group_name))""",
    "CREATE INDEX idx_brand_groups_brand ON public.brand_groups(brand)",
    """CREATE TABLE public.models (
        id SERIAL PRIMARY KEY,
        brand VARCHAR(100) NOT NULL,
        group_name VARCHAR(50) NOT NULL,
        model VARCHAR(100) NOT NULL,
        coefficient DECIMAL(4,2) NOT NULL DEFAULT 1.0
            CHECK (coefficient >= 0.5 AND coefficient <= 3.0),
        expected_features JSONB DEFAULT '[]'::jsonb NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL,
        CONSTRAINT uq_models_brand_group_model UNIQUE (brand, group_name, model))""",
)


async def test_the_seed_revisions_build_exactly_the_seed_schema(
    empty_database: URL, run_alembic: RunAlembic
) -> None:
    run_alembic(empty_database, "upgrade", SEED_TABLES)

    for table, expected_columns in SEED_COLUMNS.items():
        columns = await fetch(
            empty_database,
            """SELECT a.attname, format_type(a.atttypid, a.atttypmod),
                      pg_get_expr(d.adbin, d.adrelid), a.attnotnull
               FROM pg_attribute a
               LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
               WHERE a.attrelid = CAST(:t AS regclass) AND a.attnum > 0 AND NOT a.attisdropped
               ORDER BY a.attnum""",
            t=f"public.{table}",
        )
        assert columns == expected_columns
        constraints = await fetch(
            empty_database,
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = CAST(:t AS regclass) AND contype <> 'n'",  # PG 18 lists NOT NULLs
            t=f"public.{table}",
        )
        assert set(constraints) == SEED_CONSTRAINTS[table]
        indexes = await fetch(
            empty_database,
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = :t",
            t=table,
        )
        assert {row[0] for row in indexes} == SEED_INDEXES[table]


async def test_downgrade_one_step_drops_models_only_and_base_drops_both(
    empty_database: URL, run_alembic: RunAlembic
) -> None:
    run_alembic(empty_database, "upgrade", SEED_TABLES)

    run_alembic(empty_database, "downgrade", "-1")
    assert await tables_in(empty_database, "public") == {
        "pricing_store_alembic_version",
        "brand_groups",
    }

    run_alembic(empty_database, "downgrade", "base")
    assert await tables_in(empty_database, "public") == set()  # its version table too

    run_alembic(empty_database, "upgrade", "head")
    assert await tables_in(empty_database, "public") == TABLES_AT_HEAD


async def test_the_lease_revision_adds_its_table_and_goes_back(
    empty_database: URL, run_alembic: RunAlembic
) -> None:
    run_alembic(empty_database, "upgrade", LEASES)
    assert "pricing_store_generation_leases" in await tables_in(empty_database, "public")

    run_alembic(empty_database, "downgrade", "-1")
    assert "pricing_store_generation_leases" not in await tables_in(empty_database, "public")


async def test_later_revisions_add_notifications_and_paging_indexes_and_go_back(
    empty_database: URL, run_alembic: RunAlembic
) -> None:
    triggers = (
        "SELECT event_object_table, trigger_name, action_timing, action_orientation, "
        "event_manipulation FROM information_schema.triggers "
        "WHERE trigger_name LIKE 'pricing_store_notify%'"
    )
    paging = "SELECT indexname FROM pg_indexes WHERE indexname LIKE '%created_at_id'"
    run_alembic(empty_database, "upgrade", "head")

    # One trigger per event, each with its transition tables (TRUNCATE is not listed here).
    assert set(await fetch(empty_database, triggers)) == {
        (table, f"pricing_store_notify_{event.lower()}", "AFTER", "STATEMENT", event)
        for table in ("brand_groups", "models")
        for event in ("INSERT", "UPDATE", "DELETE")
    }
    assert {row[0] for row in await fetch(empty_database, paging)} == {
        "idx_brand_groups_created_at_id",
        "idx_models_created_at_id",
    }

    run_alembic(empty_database, "downgrade", LEASES)  # today's trigger is back
    assert set(await fetch(empty_database, triggers)) == {
        (table, "pricing_store_notify_change", "AFTER", "STATEMENT", event)
        for table in ("brand_groups", "models")
        for event in ("INSERT", "UPDATE", "DELETE")
    }
    assert "pricing_store_change_sequence" not in await tables_in(empty_database, "public")

    run_alembic(empty_database, "downgrade", SEED_TABLES)
    assert await fetch(empty_database, triggers) == []
    assert await fetch(empty_database, paging) == []


async def test_revisions_are_idempotent(empty_database: URL, run_alembic: RunAlembic) -> None:
    run_alembic(empty_database, "upgrade", "head")
    await execute(
        empty_database,
        "INSERT INTO public.brand_groups (brand, group_name, base_price) "
        "VALUES ('Levi''s', 'jeans', 25)",
    )
    run_alembic(empty_database, "stamp", "base")

    run_alembic(empty_database, "upgrade", "head")

    assert await fetch(empty_database, "SELECT brand FROM public.brand_groups") == [("Levi's",)]
    assert await fetch(empty_database, VERSION_SQL) == [(HEAD,)]


async def test_upgrade_succeeds_over_tables_created_by_hand(
    empty_database: URL, run_alembic: RunAlembic
) -> None:
    await execute(empty_database, *HAND_MADE_SEED_TABLES)

    run_alembic(empty_database, "upgrade", "head")

    indexes = await fetch(
        empty_database,
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'models'",
    )
    assert "idx_models_created_at" in {row[0] for row in indexes}


async def test_tables_and_version_table_land_in_public_under_a_tenant_search_path(
    empty_database: URL, run_alembic: RunAlembic
) -> None:
    await execute(empty_database, "CREATE SCHEMA user_42")
    await execute(
        empty_database,
        f'ALTER DATABASE "{empty_database.database}" SET search_path = user_42, public',
    )
    assert await fetch(empty_database, "SELECT current_schema()") == [("user_42",)]

    run_alembic(empty_database, "upgrade", "head")

    assert await tables_in(empty_database, "public") == TABLES_AT_HEAD
    assert await tables_in(empty_database, "user_42") == set()


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+asyncpg"])
async def test_database_url_accepts_each_postgres_scheme(
    empty_database: URL, run_alembic: RunAlembic, scheme: str
) -> None:
    run_alembic(empty_database.set(drivername=scheme), "upgrade", "head")

    assert "brand_groups" in await tables_in(empty_database, "public")


def test_offline_mode_prints_the_sql_without_a_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)

    command.upgrade(alembic_config(), "head", sql=True)

    sql = capsys.readouterr().out
    assert "CREATE TABLE public.pricing_store_alembic_version" in sql
    assert "CREATE TABLE IF NOT EXISTS public.brand_groups" in sql
    assert (
        "CREATE INDEX IF NOT EXISTS idx_models_created_at ON public.models(created_at DESC)" in sql
    )
    assert (
        "INSERT INTO public.pricing_store_alembic_version (version_num) VALUES ('3f1c2a9b7d10')"
        in sql
    )


def upgrade_with(connectable: object) -> Callable[[Connection], None]:
    """A `run_sync` callable that runs the migrations with `connectable` handed to env.py."""

    def upgrade(_: Connection) -> None:
        command.upgrade(alembic_config(connectable), "head")

    return upgrade


async def test_env_accepts_a_sync_connection(empty_database: URL) -> None:
    engine = create_engine(empty_database, poolclass=NullPool)
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "head"))
    await engine.dispose()

    assert "models" in await tables_in(empty_database, "public")


async def test_env_accepts_an_async_connection_inside_run_sync(empty_database: URL) -> None:
    engine = create_engine(empty_database, poolclass=NullPool)
    async with engine.begin() as connection:
        assert isinstance(connection, AsyncConnection)
        await connection.run_sync(upgrade_with(connection))
    await engine.dispose()

    assert "models" in await tables_in(empty_database, "public")


async def test_env_accepts_a_sync_engine(empty_database: URL) -> None:
    engine = create_engine(empty_database, poolclass=NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(upgrade_with(engine.sync_engine))
    await engine.dispose()

    assert "models" in await tables_in(empty_database, "public")


async def test_env_accepts_an_async_engine(empty_database: URL) -> None:
    engine: AsyncEngine = create_engine(empty_database, poolclass=NullPool)

    command.upgrade(alembic_config(engine), "head")
    await engine.dispose()

    assert "models" in await tables_in(empty_database, "public")


async def test_models_match_the_migrated_database(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        differences = await connection.run_sync(schema_differences)

    assert differences == []


async def test_drift_is_reported_when_the_database_differs(
    empty_database: URL, run_alembic: RunAlembic
) -> None:
    run_alembic(empty_database, "upgrade", "head")
    await execute(
        empty_database,
        "ALTER TABLE public.models ALTER COLUMN coefficient SET DEFAULT 2.0",
        "DROP INDEX public.idx_brand_groups_brand",
    )
    engine = create_engine(empty_database, poolclass=NullPool)
    async with engine.connect() as connection:
        differences = await connection.run_sync(schema_differences)
    await engine.dispose()

    kinds = {
        difference[0] if isinstance(difference, tuple) else difference[0][0]
        for difference in differences
    }
    assert kinds == {"add_index", "modify_default"}


def alembic_process(url: URL, *arguments: str, **environment: str) -> subprocess.Popen[str]:
    """`alembic ...` in a process of its own, as an operator's `make migrate` runs it."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "alembic"), *arguments],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": url.render_as_string(hide_password=False),
            **environment,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_migrators_started_together_apply_each_revision_once(empty_database: URL) -> None:
    migrators = [alembic_process(empty_database, "upgrade", "head") for _ in range(3)]
    outputs = [migrator.communicate(timeout=120) for migrator in migrators]

    assert [migrator.returncode for migrator in migrators] == [0, 0, 0]
    applied = "".join(stderr for _, stderr in outputs)
    for revision in REVISIONS:
        assert applied.count(f"-> {revision}") == 1
    assert await fetch(empty_database, VERSION_SQL) == [(HEAD,)]


async def test_a_migration_blocked_by_a_long_transaction_fails_clearly(
    empty_database: URL, run_alembic: RunAlembic
) -> None:
    run_alembic(empty_database, "upgrade", SEED_TABLES)
    holder = await asyncpg.connect(asyncpg_dsn(empty_database))
    reader = holder.transaction()
    await reader.start()
    await holder.execute("LOCK TABLE public.brand_groups IN ACCESS EXCLUSIVE MODE")

    started = time.monotonic()
    migrator = alembic_process(
        empty_database, "upgrade", "head", PRICING_STORE_MIGRATION_LOCK_TIMEOUT="1s"
    )
    _, stderr = migrator.communicate(timeout=60)
    waited = time.monotonic() - started
    await reader.rollback()
    await holder.close()

    assert migrator.returncode != 0
    assert (
        "migration stopped: a table stayed locked by another transaction for longer "
        "than lock_timeout=1s; nothing was changed" in " ".join(stderr.split())
    )
    assert "Traceback" not in stderr
    assert waited < 30
    assert await fetch(empty_database, VERSION_SQL) == [(SEED_TABLES,)]


async def test_the_packages_alembic_config_works_from_any_directory(
    empty_database: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no alembic.ini here
    engine = create_engine(empty_database, poolclass=NullPool)
    try:
        async with engine.begin() as connection:

            def upgrade(sync_connection: Connection) -> None:
                command.upgrade(alembic_config_of_package(connection=sync_connection), "head")

            await connection.run_sync(upgrade)
    finally:
        await engine.dispose()

    assert await tables_in(empty_database, "public") == TABLES_AT_HEAD
