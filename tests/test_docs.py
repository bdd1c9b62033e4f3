"""The docs stay true to the code: commands they name exist, links resolve, and the tables'
columns are the models' own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from sqlalchemy import CheckConstraint, Column, Table
from sqlalchemy.dialects.postgresql.base import PGDialect

from pricing_store.cli.app import app
from pricing_store.models import Base
from tests.helpers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE = re.compile(r"```.*?```|`[^`\n]+`", re.DOTALL)
LINK = re.compile(r"\]\(([^)\s]+)\)")
POSTGRESQL = PGDialect()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it untyped
COLUMNS_BLOCK = re.compile(r"<!-- columns: (\w+) -->\n(.*?)<!-- end columns -->", re.DOTALL)


def code_of(page: Path) -> str:
    """Every code span and block of a page: where commands are named."""
    return "\n".join(CODE.findall(page.read_text()))


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))


def cli_commands() -> set[str]:
    group = typer.main.get_group(app)
    return set(group.commands)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_make_target_named_exists(page: Path) -> None:
    named = set(re.findall(r"(?<![\w-])make ([a-z][a-z-]*)", code_of(page)))
    assert named - make_targets() == set()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_command_named_exists(page: Path) -> None:
    named = set(re.findall(r"(?<![\w/-])pricing-store ([a-z][a-z-]*)", code_of(page)))
    assert named - cli_commands() == set()


def slug(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading (GitHub's rule)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in page.read_text().splitlines() if line[:1] == "#"}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(CODE.sub("", page.read_text())):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (
            anchor and linked.suffix == ".md" and anchor not in anchors(linked)
        ):
            broken.append(target)
    assert broken == []


def column_row(table: Table, column: Column[object], key: tuple[str, ...]) -> str:
    checks = [
        str(constraint.sqltext)
        for constraint in table.constraints
        if isinstance(constraint, CheckConstraint)
        and re.match(rf"{column.name}\b", str(constraint.sqltext))
    ]
    default = getattr(column.server_default, "arg", None)
    role = (
        "key"
        if column.name in key
        else ""
        if column.name in writable(table)
        else "set by the database"
    )
    return (
        f"| `{column.name}` | `{column.type.compile(dialect=POSTGRESQL)}` "
        f"| {f'`{default}`' if default is not None else ''} "
        f"| {'; '.join(f'`{check}`' for check in checks)} | {role} |"
    )


def writable(table: Table) -> set[str]:
    return {
        name
        for mapper in Base.registry.mappers
        if mapper.local_table is table
        for name in mapper.class_.field_rules
    }


def columns_table(table: Table) -> str:
    """The Markdown table of a table's columns, as the docs must show it."""
    mapper = next(mapper for mapper in Base.registry.mappers if mapper.local_table is table)
    key = mapper.class_.natural_key
    rows = [column_row(table, column, key) for column in table.columns]
    return "\n".join(
        ["| column | type | default | check | |", "| --- | --- | --- | --- | --- |", *rows, ""]
    )


def test_the_docs_column_tables_are_the_models() -> None:
    page = ROOT / "docs" / "services.md"
    shown = dict(COLUMNS_BLOCK.findall(page.read_text()))
    expected = {table.name: columns_table(table) for table in Base.metadata.sorted_tables}
    assert shown == expected, "docs/services.md's column tables should read:\n" + "\n".join(
        f"<!-- columns: {name} -->\n{table}<!-- end columns -->" for name, table in expected.items()
    )


def test_the_tenant_env_py_in_adopting_md_is_the_one_the_example_host_runs() -> None:
    page = (ROOT / "docs" / "adopting.md").read_text()
    env_py = (ROOT / "examples" / "host_app" / "migrations" / "env.py").read_text()
    assert f"```python\n{env_py.rstrip()}\n```" in page


def test_the_connection_counts_in_scaling_md_follow_from_the_code() -> None:
    """The peak counts a replica may open, as the table's rows add them up."""
    from pricing_store.lookup.pricing_lookup import GENERATION_POOL_SIZE, LEASE_POOL_SIZE

    engine = 5 + 10  # SQLAlchemy's QueuePool: pool_size 5, max_overflow 10
    lookup = 5  # the engine's pool size, by default
    listening = 1
    cached = engine + lookup + listening
    generating = cached + LEASE_POOL_SIZE
    on_standby = generating + GENERATION_POOL_SIZE
    on_primary = listening + LEASE_POOL_SIZE + GENERATION_POOL_SIZE
    page = (ROOT / "docs" / "scaling.md").read_text()
    assert (
        f"about {cached} connections at peak ({generating} with\na generator, {on_standby} "
        f"reading a standby through `listen_to`, {on_primary} of them on the primary)"
    ) in page
    assert f"up to {LEASE_POOL_SIZE} more, and up to {LEASE_POOL_SIZE + 1} more with" in page


def test_the_defaults_the_readme_names_are_the_codes() -> None:
    from pricing_store.lookup.leases import DEFAULT_LEASE_SECONDS
    from pricing_store.lookup.listener import DEFAULT_LISTEN_TIMEOUT
    from pricing_store.lookup.pricing_lookup import DEFAULT_CLOSE_TIMEOUT

    readme = (ROOT / "README.md").read_text()
    assert f"`listen_timeout`, {DEFAULT_LISTEN_TIMEOUT:g} s" in readme
    assert f"`close_timeout` ({DEFAULT_CLOSE_TIMEOUT:g} s)" in readme
    assert f"(`lease_seconds`, {DEFAULT_LEASE_SECONDS:g} s)" in readme


def test_the_metrics_production_md_lists_are_the_ones_reported() -> None:
    not_instruments = {  # spans and attributes
        "pricing_store.generate",
        "pricing_store.generator",
        "pricing_store.table",
        "pricing_store.key",
    }
    source = (ROOT / "pricing_store" / "lookup" / "telemetry.py").read_text()
    reported = set(re.findall(r'"(pricing_store\.[a-z_.]+)"', source)) - not_instruments
    page = (ROOT / "docs" / "production.md").read_text()
    table = page.split("| instrument | kind | what |")[1].split("\n\n")[0]
    listed = set(re.findall(r"`(pricing_store\.[a-z_.]+)`", table)) - not_instruments
    assert listed == reported
    assert len(reported) == 9


def test_what_operators_md_says_one_downgrade_from_head_does_is_the_head_revisions() -> None:
    from alembic.script import ScriptDirectory

    from pricing_store.ops import alembic_config

    scripts = ScriptDirectory.from_config(alembic_config())
    (head,) = scripts.get_heads()
    downgrade = " ".join(scripts.get_revision(head).module.DOWNGRADE_STATEMENTS)
    page = (ROOT / "docs" / "operators.md").read_text()
    assert (
        "`make downgrade` undoes one revision: from head today, the notifications go back" in page
    )
    counter = "pricing_store_change_sequence"
    assert f"(`public.{counter}`), which it\ncreates again" in page
    assert f"CREATE TABLE IF NOT EXISTS public.{counter}" in downgrade  # what one step puts back
