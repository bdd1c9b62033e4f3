"""Importing a file: check every line first, then load it all in one transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pricing_store.cli.records import Header, RecordError, read_records
from pricing_store.db import create_engine, create_session_factory
from pricing_store.errors import InvalidValueError
from pricing_store.models import Base
from pricing_store.models.base import KeyedModel
from pricing_store.repositories import BrandGroupRepository, ModelRepository
from pricing_store.repositories.bulk import UpsertResult
from pricing_store.repositories.rows import item_values
from pricing_store.repositories.statements import table_of

# Each table's model, by the table's name.
TABLES: dict[str, type[KeyedModel]] = {
    table_of(mapper.class_).name: mapper.class_ for mapper in Base.registry.mappers
}


# How many invalid lines are reported one by one; the rest are only counted.
SHOWN_PROBLEMS = 100


@dataclass
class Checked:
    """What checking a file found: its table, how many records, and its problems.

    `problems` holds the first SHOWN_PROBLEMS invalid lines; `invalid_lines` counts all.
    """

    table: str | None = None
    records: int = 0
    problems: list[tuple[int, str, str]] = field(default_factory=list)
    invalid_lines: int = 0

    def add(self, line: int, field: str, rule: str) -> None:
        """Count an invalid line, keeping it if it is among the first shown."""
        self.invalid_lines += 1
        if len(self.problems) < SHOWN_PROBLEMS:
            self.problems.append((line, field, rule))


def table_of_record(fields: Iterable[str]) -> str:
    """A record naming a model belongs to `models`; any other to `brand_groups`."""
    return "models" if "model" in fields else "brand_groups"


def check_file(path: Path, file_format: str, table: str | None) -> Checked:
    """Validate every record of the file, collecting every problem, not only the first.

    A CSV header naming an unknown column is one problem, not one per row.
    """
    checked = Checked(table=table)
    with path.open("rb") as stream:
        for line, record in read_records(stream, file_format):
            if isinstance(record, Header):
                checked.table = checked.table or table_of_record(record.fields)
                rules = TABLES[checked.table].field_rules
                for unknown in (name for name in record.fields if name not in rules):
                    checked.add(line, unknown, f"is not a column of {checked.table}")
                    return checked  # every row would break the same way
                continue
            checked.records += 1
            if isinstance(record, RecordError):
                checked.add(line, record.field, record.rule)
                continue
            if checked.table is None:
                checked.table = table_of_record(record)
            try:
                item_values(TABLES[checked.table], record)
            except InvalidValueError as error:
                checked.add(line, error.field, error.rule)
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
    with path.open("rb") as stream:
        records = (record for _, record in read_records(stream, file_format))
        for count, record in enumerate(
            (record for record in records if not isinstance(record, Header)), start=1
        ):
            yield record
            if count % 1000 == 0:
                advance(1000)
