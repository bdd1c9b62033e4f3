"""Importing a file: check every line first, then load it all in one transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pricing_store.bulk import UpsertResult
from pricing_store.cli.records import RecordError, read_records
from pricing_store.db import create_engine, create_session_factory
from pricing_store.errors import InvalidValueError
from pricing_store.models import BrandGroup, Model
from pricing_store.repositories import BrandGroupRepository, ModelRepository
from pricing_store.rows import item_values

TABLES: dict[str, type[BrandGroup] | type[Model]] = {"brand_groups": BrandGroup, "models": Model}


@dataclass
class Checked:
    """What checking a file found: its table, how many records, and every problem."""

    table: str | None = None
    records: int = 0
    problems: list[tuple[int, str, str]] = field(default_factory=list)


def table_of_record(record: dict[str, Any]) -> str:
    """A record naming a model belongs to `models`; any other to `brand_groups`."""
    return "models" if "model" in record else "brand_groups"


def check_file(path: Path, file_format: str, table: str | None) -> Checked:
    """Validate every record of the file, collecting every problem, not only the first."""
    checked = Checked(table=table)
    with path.open(newline="", encoding="utf-8") as stream:
        for line, record in read_records(stream, file_format):
            checked.records += 1
            if isinstance(record, RecordError):
                checked.problems.append((line, record.field, record.rule))
                continue
            if checked.table is None:
                checked.table = table_of_record(record)
            try:
                item_values(TABLES[checked.table], record)
            except InvalidValueError as error:
                checked.problems.append((line, error.field, error.rule))
    return checked


async def load_file(
    url: str,
    path: Path,
    file_format: str,
    table: str,
    *,
    batch_size: int,
    advance: Callable[[int], None],
) -> UpsertResult:
    """Upsert every record of a checked file, all or nothing."""
    engine = create_engine(url)
    try:
        async with create_session_factory(engine).begin() as session:
            repository = (BrandGroupRepository if table == "brand_groups" else ModelRepository)(
                session
            )
            return await repository.bulk_upsert(
                records_of(path, file_format, advance), batch_size=batch_size
            )
    finally:
        await engine.dispose()


def records_of(path: Path, file_format: str, advance: Callable[[int], None]) -> Iterator[Any]:
    """The file's records, reporting progress every thousand."""
    with path.open(newline="", encoding="utf-8") as stream:
        for count, (_, record) in enumerate(read_records(stream, file_format), start=1):
            yield record
            if count % 1000 == 0:
                advance(1000)
