"""What `stats` and `check` read from a database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pricing_store.checkout import migrate_command
from pricing_store.ops.drift import schema_differences
from pricing_store.ops.migrating import applied_revisions, head_revisions

STATS_SQL = {
    "brand_groups": "SELECT count(*) FROM public.brand_groups",
    "models": "SELECT count(*) FROM public.models",
    "brands": "SELECT count(DISTINCT brand) FROM public.brand_groups",
    "groups": "SELECT count(DISTINCT group_name) FROM public.brand_groups",
    "newest_change": """
        SELECT max(changed) FROM (
            SELECT max(updated_at) AS changed FROM public.brand_groups
            UNION ALL SELECT max(updated_at) FROM public.models
        ) AS both_tables
    """,
}
PRICES_BY_GROUP_SQL = """
    SELECT group_name, count(*), min(base_price), max(base_price)
    FROM public.brand_groups GROUP BY group_name ORDER BY group_name
"""


async def stats(engine: AsyncEngine) -> dict[str, Any]:
    """Row counts, brands and groups, the price range of each group, the newest change."""
    async with engine.connect() as connection:
        found: dict[str, Any] = {
            name: await connection.scalar(text(sql)) for name, sql in STATS_SQL.items()
        }
        groups = await connection.execute(text(PRICES_BY_GROUP_SQL))
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
