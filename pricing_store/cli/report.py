"""What `stats` and `check` read from a database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select, union_all
from sqlalchemy.ext.asyncio import AsyncEngine

from pricing_store.checkout import migrate_command
from pricing_store.models import BrandGroup, Model
from pricing_store.ops.drift import schema_differences
from pricing_store.ops.migrating import applied_revisions, head_revisions
from pricing_store.repositories.statements import table_of

BRAND_GROUPS, MODELS = table_of(BrandGroup), table_of(Model)
CHANGES = union_all(
    *(select(func.max(table.c.updated_at).label("changed")) for table in (BRAND_GROUPS, MODELS))
).subquery()
STATS: dict[str, Select[Any]] = {
    "brand_groups": select(func.count()).select_from(BRAND_GROUPS),
    "models": select(func.count()).select_from(MODELS),
    "brands": select(func.count(BRAND_GROUPS.c.brand.distinct())),
    "groups": select(func.count(BRAND_GROUPS.c.group_name.distinct())),
    "newest_change": select(func.max(CHANGES.c.changed)),
}
PRICES_BY_GROUP = (
    select(
        BRAND_GROUPS.c.group_name,
        func.count(),
        func.min(BRAND_GROUPS.c.base_price),
        func.max(BRAND_GROUPS.c.base_price),
    )
    .group_by(BRAND_GROUPS.c.group_name)
    .order_by(BRAND_GROUPS.c.group_name)
)


async def stats(engine: AsyncEngine) -> dict[str, Any]:
    """Row counts, brands and groups, the price range of each group, the newest change."""
    async with engine.connect() as connection:
        found: dict[str, Any] = {
            name: await connection.scalar(query) for name, query in STATS.items()
        }
        groups = await connection.execute(PRICES_BY_GROUP)
        found["prices_by_group"] = [
            {"group_name": group, "brand_groups": count, "min_price": low, "max_price": high}
            for group, count, low, high in groups
        ]
    return found


async def problems(engine: AsyncEngine) -> list[str]:
    """Readable differences from the models and the migration head; empty when none."""
    heads = head_revisions()
    async with engine.connect() as connection:
        applied = await connection.run_sync(applied_revisions)
        differences = await connection.run_sync(schema_differences)
    found = [
        f"schema differs from the models: {describe(difference)}" for difference in differences
    ]
    if applied != heads:
        found.append(
            f"migrations: database at {', '.join(sorted(applied)) or 'none'}, "
            f"head is {', '.join(sorted(heads))} (run {migrate_command()})"
        )
    return found


def describe(difference: Any) -> str:
    """One of Alembic's differences (a tuple, or a list of them for one column) in words."""
    if isinstance(difference, list):
        return "; ".join(describe(each) for each in difference)
    kind, *details = difference
    if kind.startswith("modify_"):
        _, table, column, _, in_database, in_models = details
        return (
            f"{table}.{column} {kind.removeprefix('modify_')}: database has "
            f"{shown(in_database)}, the models say {shown(in_models)}"
        )
    thing = details[-1]
    return f"{kind.replace('_', ' ')} {getattr(thing, 'name', thing)}"


def shown(value: Any) -> str:
    """A default or type as SQL-ish text."""
    arg = getattr(value, "arg", value)
    return str(getattr(arg, "text", arg))
