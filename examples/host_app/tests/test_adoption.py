"""The host's history and pricing_store's side by side in one database, as docs/adopting.md says."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from host_app.models import HostBase
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

import pricing_store.ops
from pricing_store.ops import OWNED_FUNCTIONS, OWNED_SEQUENCES, OWNED_TABLES
from pricing_store.testing.servers import asyncpg_dsn
from tests.helpers import TENANTS, create_tenants, host_alembic, pricing_store_cli, sql

HOST_HEAD = "20260111_0100_tenant_models"


async def versions(url: str, table: str) -> list[str]:
    return [row[0] for row in await sql(url, f"SELECT version_num FROM {table}")]


async def package_head(url: str) -> list[str]:
    return sorted(pricing_store.ops.migrating.head_revisions())


async def assert_both_histories_at_head(url: str) -> None:
    assert await versions(url, "public.alembic_version") == [HOST_HEAD]
    for tenant in TENANTS:
        assert await versions(url, f"{tenant}.alembic_version") == [HOST_HEAD]
        assert await sql(url, f"SELECT count(*) FROM {tenant}.products") == [(0,)]
    assert await versions(url, "public.pricing_store_alembic_version") == await package_head(url)


async def test_package_first_then_the_host(empty_database: str) -> None:
    pricing_store_cli(empty_database, "migrate")
    host_alembic(empty_database, "upgrade", "head")

    await assert_both_histories_at_head(empty_database)
    assert "migrations at head" in pricing_store_cli(empty_database, "check").stdout
    host_alembic(empty_database, "upgrade", "head")  # again: nothing to do, no error


async def test_host_first_then_the_package(empty_database: str) -> None:
    applied = host_alembic(empty_database, "upgrade", "head")
    assert "public.brand_groups: table, constraints and indexes in place" in applied.stderr

    again = pricing_store_cli(empty_database, "migrate")
    assert "in place" not in again.stderr  # env.py's pass had done it: nothing re-run
    await assert_both_histories_at_head(empty_database)
    assert "migrations at head" in pricing_store_cli(empty_database, "check").stdout


async def test_a_new_tenant_is_added_while_readers_hold_brand_groups(
    empty_database: str,
) -> None:
    host_alembic(empty_database, "upgrade", "head")
    reader = await asyncpg.connect(asyncpg_dsn(make_url(empty_database)))  # as a service reads
    try:
        reading = reader.transaction()
        await reading.start()
        await reader.fetch("SELECT * FROM public.brand_groups")  # holds its lock until commit
        await create_tenants(empty_database, "user_3")

        started = time.monotonic()
        await asyncio.to_thread(host_alembic, empty_database, "upgrade", "head")
        took = time.monotonic() - started

        assert await versions(empty_database, "user_3.alembic_version") == [HOST_HEAD]
        assert reader.is_in_transaction()  # the reader was never made to give way
        assert took < 30
        await reading.rollback()
    finally:
        await reader.close()


def differences(connection: Connection, include_name: object) -> list[object]:
    context = MigrationContext.configure(
        connection, opts={"include_schemas": True, "include_name": include_name}
    )
    return list(compare_metadata(context, HostBase.metadata))


async def test_the_hosts_autogenerate_proposes_nothing_for_the_package(
    empty_database: str,
) -> None:
    host_alembic(empty_database, "upgrade", "head")

    checked = host_alembic(empty_database, "-x", "tenant=user_1", "check")
    assert "No new upgrade operations detected" in checked.stdout + checked.stderr

    # Without pricing_store's filter, the same comparison would drop the package's tables.
    engine = create_async_engine(
        empty_database.replace("postgresql://", "postgresql+asyncpg://", 1),
        connect_args={"server_settings": {"search_path": "user_1"}},
    )
    try:
        async with engine.connect() as connection:

            def only_schemas(name: str | None, type_: str, parents: object) -> bool:
                return name in (None, "public") if type_ == "schema" else name != "alembic_version"

            unfiltered = await connection.run_sync(differences, only_schemas)
    finally:
        await engine.dispose()
    dropped = {
        diff[1].name for diff in unfiltered if isinstance(diff, tuple) and diff[0] == "remove_table"
    }
    assert {"brand_groups", "models"} <= dropped


async def test_a_tenant_table_named_like_the_packages_is_compared_in_the_tenants_pass(
    empty_database: str,
) -> None:
    """`user_N.models` and its `idx_models_brand`: the package's names, the host's objects."""
    host_alembic(empty_database, "upgrade", "head")  # created once: then nothing proposed
    checked = host_alembic(empty_database, "-x", "tenant=user_1", "check")
    assert "No new upgrade operations detected" in checked.stdout + checked.stderr

    # Its columns are compared too.
    await sql(empty_database, "ALTER TABLE user_1.models DROP COLUMN name")
    drifted = host_alembic(empty_database, "-x", "tenant=user_1", "check", check=False)
    assert "('add_column', None, 'models', Column('name'" in drifted.stderr
    assert "add_table" not in drifted.stderr

    # Gone, it is proposed, alone: nothing of the package's `public.models` with it.
    await sql(empty_database, "DROP TABLE user_1.models")
    missing = host_alembic(empty_database, "-x", "tenant=user_1", "check", check=False)
    proposed = missing.stderr.split("New upgrade operations detected")[1]
    assert "('add_table', Table('models', MetaData()" in proposed
    assert "schema='public'" not in proposed


async def test_pricing_store_check_is_clean_under_a_tenants_search_path(
    empty_database: str,
) -> None:
    host_alembic(empty_database, "upgrade", "head")
    name = make_url(empty_database).database
    await sql(empty_database, f'ALTER DATABASE "{name}" SET search_path = user_1, public')

    checked = pricing_store_cli(empty_database, "check")

    assert checked.stdout.strip() == "schema matches the models; migrations at head"
    assert checked.stderr == ""


async def owned_objects(url: str) -> set[str]:
    rows = await sql(
        url,
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
        "UNION ALL SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace",
    )
    return {row[0] for row in rows} & (OWNED_TABLES | OWNED_FUNCTIONS | OWNED_SEQUENCES)


async def test_removal_in_the_right_order(empty_database: str) -> None:
    host_alembic(empty_database, "upgrade", "head")
    await sql(
        empty_database,
        "INSERT INTO public.brand_groups (brand, group_name, base_price) "
        "VALUES ('Levi''s', 'jeans', 25)",
    )
    await sql(
        empty_database,
        "INSERT INTO user_1.products (title, brand_group_id, condition) "
        "SELECT '501', id, 0.9 FROM public.brand_groups",
    )

    name = make_url(empty_database).database
    for search_path in ("public", "user_1, public"):  # a tenant's role names the same
        await sql(empty_database, f'ALTER DATABASE "{name}" SET search_path = {search_path}')
        refused = pricing_store_cli(
            empty_database, "downgrade", "--to", "base", "--yes", check=False
        )
        assert refused.returncode == 1
        assert refused.stderr.splitlines() == [
            "error: not removed: public.brand_groups is referenced by "
            "products_brand_group_id_fkey on user_1.products, products_brand_group_id_fkey "
            "on user_2.products; drop those foreign keys first (nothing was changed)"
        ]
    assert await sql(empty_database, "SELECT count(*) FROM public.brand_groups") == [(1,)]
    assert await versions(empty_database, "public.pricing_store_alembic_version") == (
        await package_head(empty_database)
    )

    # The host first drops what references the package, then the package goes.
    host_alembic(empty_database, "downgrade", "20260109_0200_unify_action_types")
    pricing_store_cli(empty_database, "downgrade", "--to", "base", "--yes")

    assert await owned_objects(empty_database) == set()
    assert await versions(empty_database, "public.alembic_version") == [
        "20260109_0200_unify_action_types"
    ]
    assert await sql(empty_database, "SELECT count(*) FROM public.action_types") == [(3,)]


@pytest.mark.parametrize("tenant", TENANTS)
async def test_every_tenant_pass_leaves_public_as_the_package_put_it(
    host_database_url: str, tenant: str
) -> None:
    tables = await sql(
        host_database_url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
        tenant,
    )
    assert {row[0] for row in tables} == {"alembic_version", "products", "models"}
    assert (
        await owned_objects(host_database_url) == OWNED_TABLES | OWNED_FUNCTIONS | OWNED_SEQUENCES
    )
