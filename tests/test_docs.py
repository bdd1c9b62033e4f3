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
