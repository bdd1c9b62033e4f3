"""A column in one place: adding one takes its model (with its rule) and one revision.

A copy of the package gets `expected_materials` on `models` by editing `models/model.py`
(the column and its rule), adding `PriceReference`'s typed field, and writing one
revision; nothing else. The copy then migrates a fresh database and runs the write paths
(`upsert`, `get_or_create`, `bulk_upsert`, validation), the lookup, the CLI's import,
export and stats, and the drift check, each of which must carry the new column.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from sqlalchemy import URL

from tests.helpers import HEAD, ROOT

COLUMN = "expected_materials"

REVISION = f'''"""add {COLUMN}

Revision ID: f0e1d2c3b4a5
Revises: {HEAD}
"""

from pricing_store.ops.revisions import apply

revision = "f0e1d2c3b4a5"
down_revision = "{HEAD}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply(
        ("ALTER TABLE public.models ADD COLUMN {COLUMN} JSONB NOT NULL DEFAULT '[]'::jsonb",),
        "public.models.{COLUMN}: added",
    )


def downgrade() -> None:
    apply(("ALTER TABLE public.models DROP COLUMN {COLUMN}",), "public.models.{COLUMN}: dropped")
'''

# What the copy does with its new column; every path must carry it.
SCRIPT = f"""
import asyncio, json, os, subprocess, sys
from pathlib import Path

import pricing_store
from pricing_store import (
    BrandGroupRepository, InvalidValueError, ModelRepository, PricingLookup, create_engine,
    create_session_factory,
)
from pricing_store.ops import upgrade

assert Path(pricing_store.__file__).is_relative_to(Path.cwd()), pricing_store.__file__
URL = os.environ["DATABASE_URL"]
KEY = {{"brand": "Levi's", "group_name": "jeans"}}


def cli(*arguments, stdin=None):
    done = subprocess.run(
        [sys.executable, "-m", "pricing_store.cli", *arguments],
        input=stdin, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def main():
    engine = create_engine(URL)
    async with engine.begin() as connection:
        await connection.run_sync(upgrade)
    sessions = create_session_factory(engine)
    async with sessions.begin() as session:
        await BrandGroupRepository(session).upsert({{**KEY, "base_price": 40}})
        models = ModelRepository(session)
        row = await models.upsert({{**KEY, "model": "501", "{COLUMN}": ["denim"]}})
        assert row.{COLUMN} == ["denim"], row.{COLUMN}
        row, created = await models.get_or_create({{**KEY, "model": "505", "{COLUMN}": ["twill"]}})
        assert created and row.{COLUMN} == ["twill"]
        result = await models.bulk_upsert(
            [{{**KEY, "model": "517", "{COLUMN}": ["stretch", "denim"]}}]
        )
        assert result.inserted == 1, result
        try:
            await models.upsert({{**KEY, "model": "550", "{COLUMN}": [7]}})
        except InvalidValueError as error:
            assert error.field == "{COLUMN}", error
        else:
            raise AssertionError("a number in {COLUMN} was accepted")
    lookup = PricingLookup(engine)
    try:
        reference = await lookup.get("Levi's", "jeans", "517")
        assert reference.{COLUMN} == ("stretch", "denim"), reference
        absent = await lookup.get("Levi's", "jeans", "999")
        assert absent.{COLUMN} == (), absent
    finally:
        await lookup.close()
    await engine.dispose()


asyncio.run(main())
exported = [json.loads(line) for line in cli("export", "--table", "models").splitlines()]
assert {{tuple(row["{COLUMN}"]) for row in exported}} == {{
    ("denim",), ("twill",), ("stretch", "denim")
}}, exported
Path("more.csv").write_text(
    'brand,group_name,model,{COLUMN}\\n'
    'Levi\\'s,jeans,560,"[""wool""]"\\n'
)
cli("import", "more.csv")
csv_out = cli("export", "--table", "models", "--format", "csv")
assert '"[""wool""]"' in csv_out, csv_out
assert "4 models" in cli("stats")
cli("check")
print("ok")
"""


def patched_copy(root: Path) -> Path:
    """The package with the new column: its model, PriceReference and one revision."""
    copy = root / "copy"
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "pricing_store", copy / "pricing_store", ignore=skip)
    shutil.copytree(ROOT / "migrations", copy / "pricing_store" / "migrations", ignore=skip)
    edit(
        copy / "pricing_store/models/model.py",
        ('    "expected_features": rules.string_list,\n', f'    "{COLUMN}": rules.string_list,\n'),
        (
            "    # What the repositories need",
            f"    {COLUMN}: Mapped[list[str]] = mapped_column(\n"
            "        STRING_LIST_JSONB, server_default=EMPTY_JSONB_ARRAY\n    )\n\n",
        ),
    )
    edit(
        copy / "pricing_store/lookup/reference.py",
        ("    model_found: bool\n", f"    {COLUMN}: tuple[str, ...]\n"),
    )
    (copy / "pricing_store/migrations/versions/20270101_0000_add_materials.py").write_text(REVISION)
    return copy


def edit(path: Path, *insertions: tuple[str, str]) -> None:
    """Insert each text just after (or, for a comment line, just before) its anchor."""
    text = path.read_text()
    for anchor, added in insertions:
        assert text.count(anchor) == 1, f"{anchor!r} is not once in {path.name}"
        before = anchor.lstrip().startswith("#")
        text = text.replace(anchor, added + anchor if before else anchor + added)
    path.write_text(text)


def test_a_new_column_needs_its_model_and_one_revision(empty_database: URL, tmp_path: Path) -> None:
    copy = patched_copy(tmp_path)
    url = empty_database.render_as_string(hide_password=False)
    environment = {**os.environ, "PYTHONPATH": str(copy), "DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=copy,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("ok")
