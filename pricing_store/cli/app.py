"""The `pricing-store` command: load, export, look up, summarise and check pricing data.

Only typer and the standard library are imported up front: each command imports what it
uses (SQLAlchemy, asyncpg, alembic, rich), so `--help` starts in a fraction of a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pricing_store.cli.records import FORMATS, columns, format_of, json_line

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

app = typer.Typer(
    name="pricing-store",
    help="Load, export, look up, summarise and check the pricing reference data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def say(text: str) -> None:
    """A line on standard output."""
    print(text, flush=True)


def warn(text: str) -> None:
    """A line on standard error."""
    print(text, file=sys.stderr, flush=True)


def show_version(asked: bool) -> None:
    """`--version`: print the package's version and stop."""
    if asked:
        say(f"pricing-store {version('pricing-store')}")
        raise typer.Exit(0)


@app.callback()
def options(
    _: Annotated[
        bool,
        typer.Option(
            "--version", callback=show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Load, export, look up, summarise and check the pricing reference data."""


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="DATABASE_URL",
        show_envvar=True,
        help=(
            "PostgreSQL URL; default DATABASE_URL, then (run from the project's checkout "
            "only) its local development database."
        ),
    ),
]
Debug = Annotated[bool, typer.Option("--debug", help="Show the full traceback of an error.")]
TableName = Annotated[
    str | None,
    typer.Option("--table", help="brand_groups or models (import: detected from the fields)."),
]
FileFormat = Annotated[
    str | None, typer.Option("--format", help="jsonl or csv (import: default from the extension).")
]
PROGRESS_FROM_LINES = 5_000


@app.command("import")
def import_file(
    file: Annotated[str, typer.Argument(help="A .jsonl or .csv file, or - for standard input.")],
    table: TableName = None,
    file_format: FileFormat = None,
    batch_size: Annotated[
        int, typer.Option(help="Rows validated between event-loop turns.")
    ] = 10_000,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate only; write nothing.")
    ] = False,
    database_url: DatabaseUrl = None,
    debug: Debug = False,
) -> None:
    """Load a file into brand_groups or models: every line, or none.

    Every invalid line is reported as FILE:LINE: field: rule, and then nothing is written.

    Example: pricing-store import examples/pricing_sample.jsonl
    """

    async def action() -> int:
        from pricing_store.cli.importer import check_file, load_file

        check_choice("--table", table, columns().tables)
        check_choice("--format", file_format, FORMATS)
        with readable_file(file, file_format) as (path, detected):
            checked = check_file(path, detected, table)
            for line, field, rule in checked.problems:
                warn(f"{file}:{line}: {field}: {rule}")
            if checked.invalid_lines > len(checked.problems):
                warn(f"... and {checked.invalid_lines - len(checked.problems)} more invalid lines")
            if checked.invalid_lines:
                warn(f"{checked.invalid_lines} invalid line(s); nothing was written")
                return 1
            if checked.table is None:
                warn(f"{file}: no records")
                return 0
            if dry_run:
                say(f"{checked.records} {checked.table} record(s) valid; nothing written")
                return 0
            started = time.perf_counter()
            with progress(checked.records) as advance:
                result = await load_file(
                    database(database_url),
                    path,
                    detected,
                    checked.table,
                    batch_size=batch_size,
                    advance=advance,
                )
            say(
                f"{checked.table}: {result.inserted} inserted, {result.updated} updated, "
                f"{result.unchanged} unchanged in {time.perf_counter() - started:.1f} s"
            )
            return 0

    run(action, debug)


@app.command()
def export(
    table: TableName = None,
    file_format: FileFormat = None,
    database_url: DatabaseUrl = None,
    debug: Debug = False,
) -> None:
    """Write a table to standard output, newest first, in a form `import` reads back.

    Streams plain rows in keyset pages, so memory stays flat whatever the table's size.

    Example: pricing-store export --table models --format csv > models.csv
    """

    async def action() -> int:
        from pricing_store.cli.export import export_table

        check_choice("--table", table, columns().tables)
        check_choice("--format", file_format, FORMATS)
        await export_table(database(database_url), table or "brand_groups", file_format or "jsonl")
        return 0

    run(action, debug)


@app.command()
def lookup(
    brand: Annotated[str, typer.Argument(help='The brand, e.g. "Levi\'s".')],
    group: Annotated[str, typer.Argument(help="The group, e.g. jeans.")],
    model: Annotated[str | None, typer.Argument(help="The model, e.g. 501.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url: DatabaseUrl = None,
    debug: Debug = False,
) -> None:
    """Show the price reference of a Brand×Group, and of a model in it.

    Example: pricing-store lookup "Levi's" jeans "Big E"
    """

    async def action() -> int:
        from rich.console import Console
        from rich.table import Table

        from pricing_store.lookup import PricingLookup

        async with engine_for(database_url) as engine, PricingLookup(engine) as lookups:
            reference = await lookups.get(brand, group, model)
        if reference is None:
            named = " / ".join(json.dumps(part, ensure_ascii=False) for part in (brand, group))
            warn(f"no Brand×Group {named}")  # one kind of quotes, whatever the key holds
            return 1
        fields = dataclasses.asdict(reference)
        if as_json:
            print(json_line({key: listed(value) for key, value in fields.items()}))
            return 0
        shown = Table(
            title=" / ".join(filter(None, (reference.brand, reference.group_name, model)))
        )
        shown.add_column("field")
        shown.add_column("value")
        for key, value in fields.items():
            shown.add_row(
                key.replace("_", " "), ", ".join(value) if isinstance(value, tuple) else str(value)
            )
        Console(highlight=False, markup=False, soft_wrap=True).print(shown)
        return 0

    run(action, debug)


@app.command()
def stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url: DatabaseUrl = None,
    debug: Debug = False,
) -> None:
    """Summarise the data: row counts, brands, groups, price range per group, newest change.

    Example: pricing-store stats --json
    """

    async def action() -> int:
        from rich.console import Console
        from rich.table import Table

        from pricing_store.cli import report

        async with engine_for(database_url) as engine:
            found = await report.stats(engine)
        if as_json:
            print(json.dumps(found, default=str))
            return 0
        say(
            f"{found['brand_groups']} brand groups ({found['brands']} brands, "
            f"{found['groups']} groups), {found['models']} models; "
            f"newest change {found['newest_change'] or 'never'}"
        )
        prices = Table("group", "brand groups", "lowest price", "highest price")
        for row in found["prices_by_group"]:
            prices.add_row(
                row["group_name"],
                str(row["brand_groups"]),
                str(row["min_price"]),
                str(row["max_price"]),
            )
        Console(highlight=False, markup=False, soft_wrap=True).print(prices)
        return 0

    run(action, debug)


@app.command()
def check(database_url: DatabaseUrl = None, debug: Debug = False) -> None:
    """Check that the migration head is applied and the schema matches the models.

    Exits non-zero with a list of the differences otherwise.

    Example: pricing-store check
    """

    async def action() -> int:
        from pricing_store.cli import report

        async with engine_for(database_url) as engine:
            found = await report.problems(engine)
        for problem in found:
            warn(problem)
        if found:
            return 1
        say("schema matches the models; migrations at head")
        return 0

    run(action, debug)


@app.command()
def migrate(database_url: DatabaseUrl = None, debug: Debug = False) -> None:
    """Apply every migration not yet applied (alembic upgrade head).

    Example: pricing-store migrate
    """

    async def action() -> int:
        from alembic import command

        from pricing_store.ops import alembic_config

        await asyncio.to_thread(command.upgrade, alembic_config(database(database_url)), "head")
        return 0

    run(action, debug)


@app.command()
def downgrade(
    to: Annotated[str, typer.Option("--to", help="The revision to go back to.")] = "-1",
    yes: Annotated[
        bool, typer.Option("--yes", help="Downgrade a DATABASE_URL, not the dev database.")
    ] = False,
    database_url: DatabaseUrl = None,
    debug: Debug = False,
) -> None:
    """Undo migrations, one by default; a downgrade can drop tables and their data.

    Against any database but the local development one it refuses without --yes.

    Example: pricing-store downgrade --to base --yes
    """

    async def action() -> int:
        if database_url and not yes:
            from pricing_store.checkout import working_in_checkout

            make = " (make downgrade confirm=yes)" if working_in_checkout() else ""
            warn(
                "refusing to downgrade a DATABASE_URL: it may drop tables with their data; "
                f"pass --yes{make} if you mean it"
            )
            return 2
        from alembic import command

        from pricing_store.ops import alembic_config

        await asyncio.to_thread(command.downgrade, alembic_config(database(database_url)), to)
        return 0

    run(action, debug)


SinceDatabase = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help=(
            "Read the revision this database has recorded and print only the SQL from it to "
            "head (reads, changes nothing). DATABASE_URL is not read: without this option "
            "nothing is connected to."
        ),
    ),
]


@app.command("migrate-sql")
def migrate_sql(database_url: SinceDatabase = None, debug: Debug = False) -> None:
    """Print the SQL of every migration without connecting (alembic upgrade head --sql).

    With --database-url, only what that database still needs, from its recorded revision.

    Example: pricing-store migrate-sql > schema.sql
    """

    async def action() -> int:
        from alembic import command

        from pricing_store.ops import alembic_config
        from pricing_store.ops.migrating import head_revisions

        since = await recorded_revision(database_url) if database_url else None
        if since is not None and since in head_revisions():
            warn(f"the database is at head ({since}): no SQL to run")
            return 0
        target = f"{since}:head" if since else "head"
        await asyncio.to_thread(command.upgrade, alembic_config(None), target, sql=True)
        return 0

    run(action, debug)


async def recorded_revision(url: str) -> str | None:
    """The package's revision recorded in the database; None before any.

    Raises:
        PricingStoreError: if an earlier version of the package recorded it in a shared
            `alembic_version`, which only `migrate` moves into the package's own table.
    """
    from pricing_store.db import create_engine
    from pricing_store.errors import PricingStoreError
    from pricing_store.ops.migrating import applied_revisions, recorded_in_shared_table

    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            recorded = await connection.run_sync(applied_revisions)
            legacy = await connection.run_sync(recorded_in_shared_table)
    finally:
        await engine.dispose()
    if legacy:
        raise PricingStoreError(
            f"the database records the package's revision {', '.join(sorted(legacy))} in the "
            "shared public.alembic_version, as an earlier version did: run "
            "`pricing-store migrate` once, which moves it to the package's own table (the "
            "offline SQL would not, and would leave it there)"
        )
    return max(recorded) if recorded else None  # one chain: one revision recorded


def run(action: Callable[[], Coroutine[Any, Any, int]], debug: bool) -> None:
    """Run a command; an error is one clear line (no traceback unless --debug)."""
    try:
        code = asyncio.run(action())
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
    except Exception as error:
        if debug:
            raise
        from pricing_store.db import hide_passwords
        from pricing_store.errors import first_line, translate

        warn(f"error: {hide_passwords(first_line(translate(error) or error))}")
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def database(option: str | None) -> str:
    """The URL to use: --database-url or DATABASE_URL, else the checkout's development one.

    Raises:
        PricingStoreError: with neither, outside a checkout.
    """
    from pricing_store.errors import PricingStoreError
    from pricing_store.ops import devdb

    if option:
        return option
    data_directory = devdb.checkout_data_directory()
    if data_directory is None:
        raise PricingStoreError("no database: set DATABASE_URL or pass --database-url")
    warn("no DATABASE_URL: using the local development database")
    return devdb.ensure_running(data_directory)


@contextmanager
def readable_file(file: str, file_format: str | None) -> Iterator[tuple[Path, str]]:
    """The file to read twice (check, then load), standard input spooled to disk first."""
    if file != "-":
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"{file}: no such file")
        yield path, format_of(path, file_format)
        return
    if file_format is None:
        raise ValueError("reading standard input needs --format jsonl or csv")
    with tempfile.NamedTemporaryFile("w", suffix=f".{file_format}", encoding="utf-8") as spool:
        shutil.copyfileobj(sys.stdin, spool)
        spool.flush()
        yield Path(spool.name), file_format


@contextmanager
def progress(total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on standard error, for large files when it is a terminal."""
    from rich.console import Console
    from rich.progress import Progress

    errors = Console(stderr=True)
    shown = total >= PROGRESS_FROM_LINES and errors.is_terminal
    with Progress(console=errors, disable=not shown, transient=True) as bar:
        task = bar.add_task("importing", total=total)
        yield lambda count: bar.advance(task, count)


@asynccontextmanager
async def engine_for(option: str | None) -> AsyncIterator[AsyncEngine]:
    """An engine on the command's database, disposed of afterwards."""
    from pricing_store.db import create_engine

    engine = create_engine(database(option))
    try:
        yield engine
    finally:
        await engine.dispose()


def check_choice(option: str, value: str | None, choices: Any) -> None:
    """Reject a value that is not one of the choices.

    Raises:
        ValueError: naming the option and its choices.
    """
    if value is not None and value not in choices:
        raise ValueError(f"{option} must be one of {', '.join(choices)}, not {value!r}")


def listed(value: Any) -> Any:
    """Tuples as lists, for JSON."""
    return list(value) if isinstance(value, tuple) else value


def main() -> None:
    """The console script's entry point."""
    app()
