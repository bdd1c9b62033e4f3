"""Living in a host's database: its version table, its env.py, its autogenerate, its engine."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool

import pricing_store.checkout
from pricing_store import (
    BrandGroupRepository,
    PricingLookup,
    SchemaNotMigratedError,
    create_engine,
)
from pricing_store.models import Base
from pricing_store.ops import (
    OWNED_FUNCTIONS,
    OWNED_INDEXES,
    OWNED_SEQUENCES,
    OWNED_TABLES,
    include_name,
    upgrade,
)
from pricing_store.ops.migrating import MIGRATION_LOCK, head_revisions
from tests.helpers import ROOT, execute, fetch, tables_in
from tests.provision import asyncpg_dsn, url_text

HOST_REVISION = "20260109_0200_unify_action_types"
VERSION_SQL = "SELECT version_num FROM public.pricing_store_alembic_version"
# Every relation and function in public, by name.
CATALOG_SQL = """
    SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace
    UNION ALL SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
"""


def cli(url: URL, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`pricing-store ...` in a process of its own, from a directory with no checkout."""
    return subprocess.run(
        [sys.executable, "-m", "pricing_store.cli", *arguments, "--database-url", url_text(url)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )


async def migrate_with_the_package(url: URL, revision: str = "head") -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(upgrade, revision)
    finally:
        await engine.dispose()


async def as_an_earlier_version_left_it(url: URL, *host_rows: str) -> None:
    """The package at head, its revision in a shared `public.alembic_version`."""
    await migrate_with_the_package(url)
    await execute(
        url,
        "ALTER TABLE public.pricing_store_alembic_version RENAME TO alembic_version",
        "ALTER TABLE public.alembic_version "
        "RENAME CONSTRAINT pricing_store_alembic_version_pkc TO alembic_version_pkc",
        *(f"INSERT INTO public.alembic_version VALUES ('{row}')" for row in host_rows),
    )


async def test_a_revision_in_a_shared_alembic_version_is_carried_over_and_host_rows_stay(
    empty_database: URL,
) -> None:
    await as_an_earlier_version_left_it(empty_database, HOST_REVISION)
    url = url_text(empty_database)

    asked = cli(empty_database, "migrate-sql", "--database-url", url)  # not from base
    migrated = cli(empty_database, "migrate")
    after = cli(empty_database, "migrate-sql", "--database-url", url)

    assert asked.returncode == 1
    assert asked.stdout == ""
    assert "shared public.alembic_version" in asked.stderr
    assert "run `pricing-store migrate` once" in asked.stderr
    assert after.returncode == 0
    assert "at head" in after.stderr

    assert migrated.returncode == 0, migrated.stderr
    assert "in place" not in migrated.stderr  # nothing re-run
    assert await fetch(empty_database, VERSION_SQL) == [(rev,) for rev in head_revisions()]
    assert await fetch(empty_database, "SELECT version_num FROM public.alembic_version") == [
        (HOST_REVISION,)
    ]


async def test_a_shared_alembic_version_holding_only_the_packages_revision_goes(
    empty_database: URL,
) -> None:
    await as_an_earlier_version_left_it(empty_database)

    assert cli(empty_database, "migrate").returncode == 0

    assert "alembic_version" not in await tables_in(empty_database, "public")
    assert await fetch(empty_database, VERSION_SQL) == [(rev,) for rev in head_revisions()]


async def test_every_command_works_beside_a_hosts_history_in_either_order(
    empty_database: URL,
) -> None:
    await execute(
        empty_database,
        "CREATE TABLE public.alembic_version (version_num VARCHAR(32) PRIMARY KEY)",
        f"INSERT INTO public.alembic_version VALUES ('{HOST_REVISION}')",
    )
    sql = (
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "pricing_store.cli", "migrate-sql"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    ).stdout
    connection = await asyncpg.connect(asyncpg_dsn(empty_database))
    try:
        await connection.execute(sql)  # piped into the host's database as a script
    finally:
        await connection.close()

    for arguments in (("migrate",), ("check",), ("downgrade", "--to", "base", "--yes")):
        done = cli(empty_database, *arguments)
        assert done.returncode == 0, (arguments, done.stderr)
    assert await fetch(empty_database, "SELECT version_num FROM public.alembic_version") == [
        (HOST_REVISION,)
    ]
    assert await tables_in(empty_database, "public") == {"alembic_version"}


async def test_upgrade_in_a_hosts_transaction_commits_nothing_and_keeps_its_settings(
    empty_database: URL,
) -> None:
    engine = create_engine(empty_database, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SET LOCAL lock_timeout = '7s'"))
            await connection.execute(text("SET LOCAL search_path = pg_catalog"))
            await connection.run_sync(upgrade)
            settings = await connection.execute(
                text(
                    "SELECT current_setting('lock_timeout'), "
                    "current_setting('statement_timeout'), current_setting('search_path')"
                )
            )
            assert tuple(settings.one()) == ("7s", "0", "pg_catalog")
            await connection.rollback()
    finally:
        await engine.dispose()

    assert await tables_in(empty_database, "public") == set()  # the caller rolled it back


async def test_a_hosts_own_lock_timeout_while_another_migrator_runs_reads_plainly(
    empty_database: URL,
) -> None:
    other = await asyncpg.connect(asyncpg_dsn(empty_database))  # another host migrating
    engine = create_engine(empty_database, poolclass=NullPool)
    try:
        async with other.transaction():
            await other.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            async with engine.connect() as connection:
                await connection.execute(text("SET LOCAL lock_timeout = '200ms'"))  # the host's
                with pytest.raises(CommandError) as stopped:
                    await connection.run_sync(upgrade)
                await connection.rollback()
    finally:
        await engine.dispose()
        await other.close()

    assert str(stopped.value) == (
        "migration stopped: another migrator of pricing_store's tables was still running when "
        "this transaction's own lock_timeout ran out; nothing was changed. Retry once it is "
        "done, or give the transaction a longer lock_timeout"
    )
    assert await tables_in(empty_database, "public") == set()


async def test_upgrade_at_head_takes_no_lock(empty_database: URL) -> None:
    await migrate_with_the_package(empty_database)
    engine = create_engine(empty_database, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            pid = await connection.scalar(text("SELECT pg_backend_pid()"))
            await connection.run_sync(upgrade)
            locks = await fetch(
                empty_database,
                "SELECT locktype, mode, relation::regclass::text FROM pg_locks "
                "WHERE pid = :pid AND locktype NOT IN ('virtualxid', 'transactionid') "
                "AND (relation IS NULL OR relation::regclass::text NOT LIKE 'pg_%')",
                pid=pid,
            )
            # It read its version table, and touched nothing a writer or migrator waits on.
            assert {(kind, mode) for kind, mode, _ in locks} == {("relation", "AccessShareLock")}
            assert {relation for _, _, relation in locks} == {
                "pricing_store_alembic_version",
                "pricing_store_alembic_version_pkc",
            }
    finally:
        await engine.dispose()


async def test_upgrade_in_a_tenant_pass_works_on_public(empty_database: URL) -> None:
    await execute(empty_database, "CREATE SCHEMA user_1")
    engine = create_engine(
        empty_database,
        poolclass=NullPool,
        connect_args={"server_settings": {"search_path": "user_1, public"}},
    )
    try:
        for _ in range(2):  # every pass calls it; the second finds public at head
            async with engine.begin() as connection:
                await connection.run_sync(upgrade)
    finally:
        await engine.dispose()

    assert await tables_in(empty_database, "user_1") == set()
    assert await tables_in(empty_database, "public") == OWNED_TABLES


async def test_the_owned_names_are_exactly_what_the_migrations_create_and_remove(
    empty_database: URL,
) -> None:
    await execute(empty_database, "CREATE TABLE public.host_table (id SERIAL PRIMARY KEY)")
    host_objects = {"host_table", "host_table_pkey", "host_table_id_seq"}
    await migrate_with_the_package(empty_database)

    created = {row[0] for row in await fetch(empty_database, CATALOG_SQL)} - host_objects
    assert (
        created
        == OWNED_TABLES
        | OWNED_INDEXES - {name for name in OWNED_INDEXES if name.startswith("ck_")}
        | OWNED_SEQUENCES
        | OWNED_FUNCTIONS
    )

    assert cli(empty_database, "downgrade", "--to", "base", "--yes").returncode == 0
    assert {row[0] for row in await fetch(empty_database, CATALOG_SQL)} == host_objects


def compared_in_an_env_py(connection: Connection) -> list[Any]:
    """What a host's autogenerate proposes, with the filter, for an empty MetaData."""
    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    with EnvironmentContext(config, ScriptDirectory.from_config(config)) as environment:
        environment.configure(
            connection=connection,
            target_metadata=MetaData(),
            include_name=include_name,  # type: ignore[arg-type]  # Alembic's hook types are narrower
        )
        return list(compare_metadata(environment.get_context(), MetaData()))


@pytest.mark.parametrize("search_path", ["user_1", "user_1, public", "public"])
async def test_in_an_env_py_the_filter_knows_a_tenants_table_from_the_packages(
    empty_database: URL, search_path: str
) -> None:
    """Unqualified names are resolved where Alembic's reflection found them."""
    await migrate_with_the_package(empty_database)
    await execute(empty_database, "CREATE SCHEMA user_1")
    await execute(empty_database, "CREATE TABLE user_1.models (id int PRIMARY KEY)")
    engine = create_engine(
        empty_database,
        poolclass=NullPool,
        connect_args={"server_settings": {"search_path": search_path}},
    )
    try:
        async with engine.connect() as connection:
            proposed = await connection.run_sync(compared_in_an_env_py)
    finally:
        await engine.dispose()

    removed = {diff[1].fullname for diff in proposed if diff[0] == "remove_table"}
    removed_indexes = {diff[1].name for diff in proposed if diff[0] == "remove_index"}
    # The tenant's own `models` is compared (and, absent from the MetaData, proposed for
    # removal); none of the package's tables or indexes is, however it was reached.
    assert removed == ({"models"} if search_path.startswith("user_1") else set())
    assert removed_indexes & OWNED_INDEXES == set()


async def test_passes_on_one_connection_each_resolve_names_afresh(empty_database: URL) -> None:
    """A host may run every tenant's pass on one connection, changing its search_path."""
    await migrate_with_the_package(empty_database)
    await execute(
        empty_database,
        "CREATE SCHEMA user_1",
        "CREATE SCHEMA user_2",
        "CREATE TABLE user_1.models (id int PRIMARY KEY)",  # user_2 has none
    )
    engine = create_engine(empty_database, poolclass=NullPool)
    proposed: dict[str, list[Any]] = {}
    try:
        async with engine.connect() as connection:
            for tenant in ("user_1", "user_2"):
                await connection.execute(text(f"SET search_path = {tenant}, public"))
                proposed[tenant] = await connection.run_sync(compared_in_an_env_py)
    finally:
        await engine.dispose()

    def removed(tenant: str) -> set[str]:
        return {diff[1].fullname for diff in proposed[tenant] if diff[0] == "remove_table"}

    assert removed("user_1") == {"models"}  # the tenant's own
    assert removed("user_2") == set()  # public.models, reached through the path: left out


@pytest.mark.parametrize(
    ("name", "type_", "parents", "included"),
    [
        ("brand_groups", "table", {"schema_name": None}, False),
        ("models", "table", {"schema_name": "public"}, False),
        ("pricing_store_alembic_version", "table", {"schema_name": None}, False),
        ("pricing_store_generation_leases", "table", {"schema_name": None}, False),
        ("idx_models_brand", "index", {"table_name": "models", "schema_name": None}, False),
        ("brand_group_id", "column", {"table_name": "brand_groups", "schema_name": None}, False),
        ("models", "table", {"schema_name": "user_1"}, True),  # a tenant's own table
        ("products", "table", {"schema_name": None}, True),
        ("alembic_version", "table", {"schema_name": None}, True),  # the host's decides
        ("ix_products_brand_group_id", "index", {"table_name": "products"}, True),
        ("public", "schema", {}, True),
    ],
)
def test_include_name_leaves_out_only_what_the_package_owns(
    name: str, type_: str, parents: Mapping[str, str | None], included: bool
) -> None:
    assert include_name(name, type_, parents) is included


@pytest.fixture
async def created_without_migrations(empty_database: URL) -> URL:
    """The tables as `create_all` makes them: no triggers, no lease table."""
    engine = create_engine(empty_database, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
    finally:
        await engine.dispose()
    return empty_database


class NeverCalled:
    async def brand_group(self, brand: str, group: str) -> dict[str, object]:
        raise AssertionError("not called")

    async def model(self, brand: str, group: str, model: str) -> dict[str, object]:
        raise AssertionError("not called")


async def test_a_caching_or_generating_lookup_refuses_a_half_schema(
    created_without_migrations: URL,
) -> None:
    engine = create_engine(created_without_migrations)
    try:
        with pytest.raises(SchemaNotMigratedError, match="pricing_store_notify_insert") as caught:
            await PricingLookup(engine, cache_size=10).start()
        assert "brand_groups.pricing_store_notify_truncate" in str(caught.value)
        with pytest.raises(
            SchemaNotMigratedError, match=r"table public\.pricing_store_generation_leases"
        ):
            await PricingLookup(engine, generator=NeverCalled()).start()
        async with PricingLookup(engine) as plain:  # reads alone need nothing more
            assert await plain.get("Levi's", "jeans") is None
    finally:
        await engine.dispose()


async def test_the_hint_names_the_command_that_works_outside_a_checkout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert 'run "make migrate"' in str(SchemaNotMigratedError("x"))
    monkeypatch.chdir(tmp_path)  # the same editable install, used from elsewhere
    assert 'run "pricing-store migrate"' in str(SchemaNotMigratedError("x"))
    monkeypatch.chdir(pricing_store.checkout.CHECKOUT)
    monkeypatch.setattr(pricing_store.checkout, "CHECKOUT", tmp_path)  # as from a wheel
    assert 'run "pricing-store migrate"' in str(SchemaNotMigratedError("x"))


async def test_the_lookup_connects_through_the_engines_async_creator(
    session_factory: async_sessionmaker[AsyncSession], empty_database: URL, admin_url: URL
) -> None:
    async with session_factory.begin() as session:
        await BrandGroupRepository(session).upsert(
            {"brand": "Creator", "group_name": "jeans", "base_price": 30}
        )

    async def creator() -> asyncpg.Connection:
        return await asyncpg.connect(asyncpg_dsn(admin_url))

    # The URL names a database without the tables; the creator reaches the migrated one.
    redirected = create_engine(empty_database, async_creator=creator)
    try:
        async with PricingLookup(redirected, cache_size=10) as lookup:
            found = await lookup.get("Creator", "jeans")
        assert found is not None
        assert found.base_price == 30
    finally:
        await redirected.dispose()


async def test_the_lookup_connects_with_the_engines_connect_args(admin_url: URL) -> None:
    named = create_engine(
        admin_url,
        connect_args={"server_settings": {"application_name": "host-reader"}},
    )
    try:
        async with PricingLookup(named) as lookup:
            await lookup.get("Levi's", "jeans")
            rows = await fetch(
                admin_url,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'host-reader' "
                "AND datname = current_database()",
            )
            assert rows == [(1,)]  # the lookup's connection, and the engine's pool has none
            assert named.sync_engine.pool.status().endswith("Current Checked out connections: 0")
    finally:
        await named.dispose()
