"""The `pricing-store` console script, run in a subprocess against real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pricing_store import BrandGroupRepository, PricingStoreError, create_engine
from pricing_store.cli.app import database
from pricing_store.cli.records import json_line
from pricing_store.db import hide_passwords
from pricing_store.errors import host_and_database
from pricing_store.ops import devdb
from tests.helpers import HEAD, NOTIFICATIONS, ROOT

SCRIPT = Path(sys.executable).parent / "pricing-store"
SAMPLES = ROOT / "examples"
Cli = Callable[..., subprocess.CompletedProcess[str]]


def run_cli(
    url: URL | str, *arguments: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    text_url = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    return subprocess.run(
        [str(SCRIPT), *arguments],
        cwd=cwd,
        env={**os.environ, "DATABASE_URL": text_url},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def cli(engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]) -> Cli:
    """Run the command on the test database; the tables are emptied after the test."""
    return lambda *arguments, stdin=None: run_cli(engine.url, *arguments, stdin=stdin)


def stats(cli: Cli) -> dict[str, object]:
    result = cli("stats", "--json")
    assert result.returncode == 0, result.stderr
    found: dict[str, object] = json.loads(result.stdout)
    return found


def test_importing_the_samples_then_looking_up_and_summarising(cli: Cli) -> None:
    groups = cli("import", str(SAMPLES / "pricing_sample.jsonl"))
    models = cli("import", str(SAMPLES / "models_sample.jsonl"))

    assert groups.returncode == 0, groups.stderr
    assert groups.stdout.startswith("brand_groups: 36 inserted, 0 updated, 0 unchanged in ")
    assert models.stdout.startswith("models: 34 inserted, 0 updated, 0 unchanged in ")
    found = stats(cli)
    assert (found["brand_groups"], found["models"], found["brands"]) == (36, 34, 28)
    looked_up = cli("lookup", "Levi's", "jeans", "Big E", "--json")
    reference = json.loads(looked_up.stdout)
    assert reference["coefficient"] == 2.5
    assert reference["base_price"] == 25
    assert reference["expected_features"][0] == "selvedge"
    assert "Levi's / jeans / Big E" in cli("lookup", "Levi's", "jeans", "Big E").stdout
    missing = cli("lookup", "Levi's", "ponchos")
    assert missing.returncode == 1
    assert missing.stderr.strip() == 'no Brand×Group "Levi\'s" / "ponchos"'
    again = cli("import", str(SAMPLES / "models_sample.jsonl"))
    assert again.stdout.startswith("models: 0 inserted, 0 updated, 34 unchanged")


def test_every_bad_line_is_reported_and_nothing_is_written(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"brand": "Good", "group_name": "jeans", "base_price": 25}\n'
        '{"brand": " ", "group_name": "jeans", "base_price": 25}\n'
        '{"brand": "Cheap", "group_name": "jeans", "base_price": 19.999}\n'
        "{not json\n"
        '{"brand": "Fine", "group_name": "jeans", "base_price": "30.50"}\n'
    )

    result = cli("import", str(bad))

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{bad}:2: brand: must not be empty or blank",
        f"{bad}:3: base_price: must have at most 2 decimal places",
        f"{bad}:4: line: is not valid JSON (Expecting property name enclosed in double quotes)",
        "3 invalid line(s); nothing was written",
    ]
    assert stats(cli)["brand_groups"] == 0


def test_a_csv_file_with_bad_lines_names_them_too(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "models.csv"
    bad.write_text(
        "brand,group_name,model,coefficient,expected_features\n"
        'Levi\'s,jeans,501,1.4,"[""button_fly""]"\n'
        "Levi's,jeans,505,9,\n"
        "Levi's,jeans,Big E,2.5,selvedge\n"
    )

    result = cli("import", str(bad))

    assert result.returncode == 1
    assert result.stderr.splitlines()[:2] == [
        f"{bad}:3: coefficient: must be between 0.5 and 3.0",
        f"{bad}:4: expected_features: must be a JSON array of strings",
    ]


@pytest.mark.parametrize("file_format", ["jsonl", "csv"])
async def test_export_then_import_gives_back_identical_data(
    cli: Cli, engine: AsyncEngine, tmp_path: Path, file_format: str
) -> None:
    for sample in ("pricing_sample.jsonl", "models_sample.jsonl"):
        assert cli("import", str(SAMPLES / sample)).returncode == 0
    tables = ("brand_groups", "models")
    exported = {
        table: cli("export", "--table", table, "--format", file_format).stdout for table in tables
    }
    for table, content in exported.items():
        (tmp_path / f"{table}.{file_format}").write_text(content)
    async with engine.begin() as connection:
        await connection.execute(text("TRUNCATE public.brand_groups, public.models"))

    for table in tables:
        result = cli("import", str(tmp_path / f"{table}.{file_format}"), "--table", table)
        assert result.returncode == 0, result.stderr
    again = {
        table: cli("export", "--table", table, "--format", file_format).stdout for table in tables
    }

    for table in tables:  # the same rows; their order follows the new ids
        assert sorted(again[table].splitlines()) == sorted(exported[table].splitlines())
    assert len(exported["models"].splitlines()) == (35 if file_format == "csv" else 34)


@pytest.mark.parametrize("file_format", ["jsonl", "csv"])
def test_a_large_export_reads_back(cli: Cli, tmp_path: Path, file_format: str) -> None:
    source = write_lines(tmp_path / "rows.jsonl", 2_500)
    assert cli("import", str(source)).returncode == 0

    exported = tmp_path / f"export.{file_format}"
    exported.write_text(cli("export", "--format", file_format).stdout)
    again = cli("import", str(exported))

    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("brand_groups: 0 inserted, 0 updated, 2500 unchanged")


def test_standard_input_and_dry_run(cli: Cli) -> None:
    sample = (SAMPLES / "pricing_sample.jsonl").read_text()

    dry = cli("import", "-", "--format", "jsonl", "--dry-run", stdin=sample)
    assert (dry.returncode, dry.stdout.strip()) == (
        0,
        "36 brand_groups record(s) valid; nothing written",
    )
    assert stats(cli)["brand_groups"] == 0
    missing_format = cli("import", "-", stdin=sample)
    assert missing_format.returncode == 1
    assert (
        missing_format.stderr.strip() == "error: reading standard input needs --format jsonl or csv"
    )

    loaded = cli("import", "-", "--format", "jsonl", stdin=sample)
    assert loaded.stdout.startswith("brand_groups: 36 inserted")


async def test_check_reports_drift_and_missing_migrations(
    empty_database: URL, run_alembic: Callable[..., None]
) -> None:
    run_alembic(empty_database, "upgrade", "head")
    assert run_cli(empty_database, "check").returncode == 0

    drifted_engine = create_engine(empty_database)
    async with drifted_engine.begin() as connection:
        await connection.execute(
            text("ALTER TABLE public.models ALTER COLUMN coefficient SET DEFAULT 2.0")
        )
    await drifted_engine.dispose()
    run_alembic(empty_database, "downgrade", NOTIFICATIONS)

    result = run_cli(empty_database, "check")

    assert result.returncode == 1
    assert sorted(result.stderr.splitlines()) == [
        f"migrations: database at {NOTIFICATIONS}, head is {HEAD} (run make migrate)",
        "schema differs from the models: add index idx_brand_groups_created_at_id",
        "schema differs from the models: add index idx_models_created_at_id",
        "schema differs from the models: models.coefficient default: database has 2.0, "
        "the models say 1.0",
    ]


def test_errors_are_one_line_and_never_show_the_password() -> None:
    url = "postgresql://someone:Very-Secret-42@127.0.0.1:1/nowhere"

    result = run_cli(url, "stats")
    debug = run_cli(url, "stats", "--debug")

    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: ")
    assert "Very-Secret-42" not in result.stdout + result.stderr
    assert "Traceback" in debug.stderr


@pytest.mark.parametrize("command", ["import", "export", "lookup", "stats", "check"])
def test_every_command_explains_itself_with_an_example(command: str) -> None:
    result = run_cli("postgresql://unused@127.0.0.1/unused", command, "--help")

    assert result.returncode == 0
    assert "Example: pricing-store " + command in " ".join(result.stdout.split())


def peak_memory_of_import(url: URL, path: Path) -> int:
    """Peak resident memory (KiB) of `pricing-store import path`, measured by a parent."""
    measure = (
        "import resource, subprocess, sys;"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
        "sys.stderr.write(done.stderr);"
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    result = subprocess.run(
        [sys.executable, "-c", measure, str(SCRIPT), "import", str(path)],
        env={**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False)},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    code, peak = result.stdout.split()
    assert code == "0", result.stderr
    return int(peak)


def write_lines(path: Path, count: int) -> Path:
    with path.open("w") as stream:
        for number in range(count):
            stream.write(
                f'{{"brand": "Brand {number}", "group_name": "jeans", "base_price": 25.50, '
                f'"expected_origins": ["USA", "Mexico"], "expected_trends": ["workwear"]}}\n'
            )
    return path


async def test_a_200k_line_import_runs_in_flat_memory(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    small = peak_memory_of_import(engine.url, write_lines(tmp_path / "small.jsonl", 20_000))
    large = peak_memory_of_import(engine.url, write_lines(tmp_path / "large.jsonl", 200_000))

    async with session_factory() as session:
        assert await BrandGroupRepository(session).count() == 200_000
    # Ten times the lines, a few MiB more at most; holding 200,000 rows would take >100 MiB.
    assert large < small + 24 * 1024


def import_errors(cli: Cli, path: Path, content: bytes) -> list[str]:
    path.write_bytes(content)
    result = cli("import", str(path))
    assert result.returncode == 1
    return result.stderr.splitlines()


def test_csv_files_are_read_strictly_and_reported_by_line(cli: Cli, tmp_path: Path) -> None:
    header = b"brand,group_name,base_price\n"
    bad = tmp_path / "groups.csv"

    assert import_errors(cli, bad, header + b"A,jeans,25,extra\nB,jeans\nC,jeans,26\n") == [
        f"{bad}:2: line: has 4 fields, the header has 3",
        f"{bad}:3: line: has 2 fields, the header has 3",
        "2 invalid line(s); nothing was written",
    ]
    assert import_errors(cli, bad, b"brand,group,base_price\n" + b"A,jeans,25\n" * 50) == [
        f"{bad}:1: group: is not a column of brand_groups",
        "1 invalid line(s); nothing was written",
    ]
    assert import_errors(cli, bad, header + "Caf\u00e9,jeans,25\n".encode("latin-1")) == [
        f"{bad}:2: line: is not UTF-8 (byte 0xe9 at column 4)",
        "1 invalid line(s); nothing was written",
    ]
    assert stats(cli)["brand_groups"] == 0

    bom = tmp_path / "excel.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + header + "Caf\u00e9,jeans,25\n".encode())
    result = cli("import", str(bom))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("brand_groups: 1 inserted")


def test_invalid_lines_past_a_hundred_are_counted_not_listed(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "many.jsonl"
    lines = [f'{{"brand": "B{n}", "group_name": "jeans", "base_price": 1}}' for n in range(250)]
    problems = import_errors(cli, bad, "\n".join(lines).encode())

    assert len(problems) == 102
    assert problems[0] == f"{bad}:1: base_price: must be between 5.00 and 500.00"
    assert problems[-2:] == [
        "... and 150 more invalid lines",
        "250 invalid line(s); nothing was written",
    ]


def test_an_oversized_line_is_reported_without_reading_it_whole(cli: Cli, tmp_path: Path) -> None:
    huge = '{"brand": "B", "group_name": "jeans", "base_price": 25, "expected_trends": ["'
    content = (
        '{"brand": "A", "group_name": "jeans", "base_price": 25}\n'
        + huge
        + "x" * 3_000_000
        + '"]}\n'
    ).encode()
    assert import_errors(cli, tmp_path / "huge.jsonl", content)[0] == (
        f"{tmp_path / 'huge.jsonl'}:2: line: is longer than 1,048,576 bytes"
    )


def test_oversized_lists_are_rejected_naming_the_limit(cli: Cli, tmp_path: Path) -> None:
    trends = json.dumps(["y2k"] * 101)
    line = f'{{"brand": "A", "group_name": "jeans", "base_price": 25, "expected_trends": {trends}}}'
    assert import_errors(cli, tmp_path / "long.jsonl", line.encode())[0] == (
        f"{tmp_path / 'long.jsonl'}:1: expected_trends: must have at most 100 elements, got 101"
    )


def test_a_closed_pipe_on_export_is_no_error(cli: Cli, engine: AsyncEngine) -> None:
    assert cli("import", str(SAMPLES / "pricing_sample.jsonl")).returncode == 0
    url = engine.url.render_as_string(hide_password=False)
    # pipefail: the status is export's own, not head's.
    piped = subprocess.run(
        f'set -o pipefail; "{SCRIPT}" export --database-url "{url}" | head -1',
        shell=True,
        capture_output=True,
        text=True,
        check=False,
        executable="/bin/bash",
    )
    assert len(piped.stdout.splitlines()) == 1
    assert piped.stderr == ""
    assert piped.returncode == 0


def test_database_failures_are_one_plain_line(empty_database: URL) -> None:
    not_migrated = run_cli(empty_database, "stats")
    unknown = run_cli(empty_database.set(database="no_such_database"), "stats")
    bad_port = run_cli("postgresql://postgres@127.0.0.1:5432:99/x", "stats")
    migrate_failed = run_cli("postgresql://postgres@127.0.0.1:1/x", "migrate")
    migrate_debug = run_cli("postgresql://postgres@127.0.0.1:1/x", "migrate", "--debug")

    assert not_migrated.stderr.splitlines() == [
        'error: relation "public.brand_groups" does not exist: '
        'the database is not migrated (run "make migrate")'
    ]
    where = host_and_database(empty_database.set(database="no_such_database"))
    assert unknown.stderr.splitlines() == [
        f'error: database unavailable at {where}: database "no_such_database" does not exist'
    ]
    assert bad_port.stderr.splitlines() == [
        "error: url: is not a database URL (postgresql://user@host:port/database)"
    ]
    assert len(migrate_failed.stderr.splitlines()) == 1
    assert migrate_failed.stderr.startswith("error: database unavailable at 127.0.0.1:1/x")
    assert "Traceback" in migrate_debug.stderr
    for result in (not_migrated, unknown, bad_port, migrate_failed):
        assert result.returncode == 1
        assert "sqlalchemy" not in result.stderr
        assert "Error)" not in result.stderr


def test_downgrading_a_database_url_asks_first(empty_database: URL) -> None:
    assert run_cli(empty_database, "migrate").returncode == 0

    refused = run_cli(empty_database, "downgrade", "--to", "base")
    tables_left = asyncio.run(tables(empty_database))
    confirmed = run_cli(empty_database, "downgrade", "--to", "base", "--yes")

    assert refused.returncode == 2
    assert "refusing to downgrade" in refused.stderr
    assert "(make downgrade confirm=yes)" in refused.stderr  # run in the checkout
    assert "brand_groups" in tables_left
    assert confirmed.returncode == 0, confirmed.stderr
    assert "brand_groups" not in asyncio.run(tables(empty_database))


async def tables(url: URL) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            found = await connection.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            )
            return {row[0] for row in found}
    finally:
        await engine.dispose()


def test_passwords_are_masked_only_where_they_stand_in_a_url() -> None:
    message = 'password authentication failed for user "postgres" at postgresql://app:e@db/pricing'
    assert hide_passwords(message) == (
        'password authentication failed for user "postgres" at postgresql://app:***@db/pricing'
    )


def test_the_development_database_is_the_checkouts_wherever_the_command_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert devdb.checkout_data_directory() == ROOT / ".pgdata"

    monkeypatch.setattr(devdb, "CHECKOUT", tmp_path)  # as if installed from a wheel
    with pytest.raises(PricingStoreError, match=r"^no database: set DATABASE_URL or pass"):
        database(None)
    assert list(tmp_path.iterdir()) == []  # nothing was created, nothing started


async def test_export_writes_lists_exactly_as_json_would(
    cli: Cli, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    awkward = ['say "hi"', "back\\slash", "new\nline", "tab\t\x01", "Łódź 日本", "line\u2028end"]
    async with session_factory.begin() as writer:
        await BrandGroupRepository(writer).upsert(
            {
                "brand": 'Lé "Brand"\\',
                "group_name": "jeans",
                "base_price": 25,
                "expected_trends": awkward,
            }
        )
    async with session_factory() as reader:
        row = (await BrandGroupRepository(reader).get_page(1)).items[0]
        fields = list(row.field_rules)
        expected = json_line({field: getattr(row, field) for field in fields})

    exported = cli("export")

    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == expected + "\n"


def test_every_bad_line_is_reported_whatever_it_holds(cli: Cli, tmp_path: Path) -> None:
    nested = "[" * 100_000 + "]" * 100_000
    lines = tmp_path / "hostile.jsonl"
    assert import_errors(
        cli,
        lines,
        b'{"brand": "A", "group_name": "jeans", "base_price": 25}\n'
        + f'{{"brand": "B", "group_name": "jeans", "expected_trends": {nested}}}\n'.encode()
        + b'{"brand": "", "group_name": "jeans", "base_price": 25}\n',
    ) == [
        f"{lines}:2: line: is not valid JSON (nested too deeply)",
        f"{lines}:3: brand: must not be empty or blank",
        "2 invalid line(s); nothing was written",
    ]
    cells = tmp_path / "hostile.csv"
    assert import_errors(
        cli,
        cells,
        b"brand,group_name,base_price,expected_trends\n"
        + b"A,jeans,25,"
        + b"x" * 200_000
        + b"\n"
        + b"B,jeans,25,"
        + f'"{nested[:2000]}"'.encode()
        + b"\n"
        + b",jeans,25,\n",
    ) == [
        f"{cells}:2: line: is not valid CSV (field larger than field limit (131072))",
        f"{cells}:3: expected_trends: must be a JSON array of strings",
        f"{cells}:4: brand: is required",
        "3 invalid line(s); nothing was written",
    ]


async def test_csv_for_spreadsheets_carries_no_formulas_and_reads_back_exactly(
    cli: Cli, session_factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    brands = ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "'quoted", "Plain"]
    async with session_factory.begin() as writer:
        await BrandGroupRepository(writer).bulk_upsert(
            {"brand": brand, "group_name": "jeans", "base_price": 25} for brand in brands
        )
    exported = cli("export", "--format", "csv").stdout
    cells = {line.split(",")[0] for line in exported.splitlines()[1:]}
    assert not any(cell.lstrip('"').startswith(("=", "+", "-", "@", "\t")) for cell in cells)

    (tmp_path / "back.csv").write_text(exported)
    async with session_factory.begin() as writer:
        await writer.execute(text("TRUNCATE public.brand_groups"))
    assert cli("import", str(tmp_path / "back.csv")).returncode == 0
    async with session_factory() as reader:
        stored = (await reader.scalars(text("SELECT brand FROM public.brand_groups"))).all()
    assert sorted(stored) == sorted(brands)


def test_hints_name_make_only_in_the_checkout(empty_database: URL, tmp_path: Path) -> None:
    """The same editable install, used from another directory: no `make` there."""
    refused = run_cli(empty_database, "downgrade", "--to", "base", cwd=tmp_path)
    not_migrated = run_cli(empty_database, "stats", cwd=tmp_path)

    assert refused.returncode == 2
    assert "make" not in refused.stderr
    assert not_migrated.stderr.splitlines() == [
        'error: relation "public.brand_groups" does not exist: '
        'the database is not migrated (run "pricing-store migrate")'
    ]


def test_migrate_sql_from_a_databases_recorded_revision(
    empty_database: URL, run_alembic: Callable[..., None]
) -> None:
    run_alembic(empty_database, "upgrade", NOTIFICATIONS)
    url = empty_database.render_as_string(hide_password=False)

    behind = run_cli(empty_database, "migrate-sql", "--database-url", url)
    everything = run_cli(empty_database, "migrate-sql")  # DATABASE_URL set, and not read

    assert behind.returncode == 0, behind.stderr
    assert f"Running upgrade {NOTIFICATIONS} -> " in behind.stdout
    assert "-- Running upgrade  -> " not in behind.stdout  # not from the start
    assert f"version_num='{HEAD}'" in behind.stdout
    assert "-- Running upgrade  -> " in everything.stdout

    run_alembic(empty_database, "upgrade", "head")
    at_head = run_cli(empty_database, "migrate-sql", "--database-url", url)
    assert at_head.returncode == 0
    assert at_head.stdout == ""
    assert at_head.stderr.strip() == f"the database is at head ({HEAD}): no SQL to run"
