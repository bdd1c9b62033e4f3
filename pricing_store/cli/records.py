"""Reading and writing pricing rows as JSON Lines or CSV, exactly.

Numbers are read as decimals, never through float, and written as their exact digits.
In CSV, list columns hold a JSON array (`["USA", "Mexico"]`) and an empty cell means the
column is left to its default.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

FORMATS = ("jsonl", "csv")
LIST_FIELDS = frozenset(
    {"expected_origins", "expected_decades", "expected_trends", "expected_features"}
)


class RecordError(ValueError):
    """A line that is not a record at all (bad JSON, a list cell that is not a list)."""

    def __init__(self, line: int, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.line = line
        self.field = field
        self.rule = rule


def format_of(path: Path, given: str | None) -> str:
    """The file's format: as given, else from its extension.

    Raises:
        ValueError: if neither says jsonl or csv.
    """
    if given is not None:
        return given
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson", "json"):
        return "jsonl"
    if suffix == "csv":
        return "csv"
    raise ValueError(f"cannot tell the format of {path.name}: use .jsonl or .csv, or --format")


def read_records(
    stream: TextIO, file_format: str
) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    """Yield (line number, record) for every record; a malformed line yields its error."""
    if file_format == "csv":
        yield from read_csv(stream)
    else:
        yield from read_jsonl(stream)


def read_jsonl(stream: TextIO) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    """Records of a JSON Lines stream; blank lines are skipped."""
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_float=Decimal, parse_int=Decimal)
        except json.JSONDecodeError as error:
            yield number, RecordError(number, "line", f"is not valid JSON ({error.msg})")
            continue
        if not isinstance(record, dict):
            yield number, RecordError(number, "line", "must be a JSON object")
            continue
        yield number, record


def read_csv(stream: TextIO) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    """Records of a CSV stream with a header line."""
    reader = csv.DictReader(stream)
    for row in reader:
        number = reader.line_num
        record: dict[str, Any] = {}
        try:
            for field, cell in row.items():
                if field is None or cell is None or cell == "":
                    continue  # no header for it, or left to its default
                record[field] = parse_list(number, field, cell) if field in LIST_FIELDS else cell
        except RecordError as error:
            yield number, error
            continue
        yield number, record


def parse_list(line: int, field: str, cell: str) -> Any:
    """A list cell's JSON array."""
    try:
        return json.loads(cell)
    except json.JSONDecodeError:
        raise RecordError(line, field, "must be a JSON array of strings") from None


def json_line(record: Mapping[str, Any]) -> str:
    """One JSON object on one line, decimals written with their exact digits."""
    return (
        "{"
        + ", ".join(f"{json.dumps(key)}: {json_value(value)}" for key, value in record.items())
        + "}"
    )


def json_value(value: Any) -> str:
    """A value as JSON; a Decimal as the number it is, not a float's approximation."""
    return str(value) if isinstance(value, Decimal) else json.dumps(value, ensure_ascii=False)


class RecordWriter:
    """Writes rows in a form `read_records` reads back to the same values, page by page."""

    def __init__(self, stream: TextIO, file_format: str, fields: list[str]) -> None:
        self.stream = stream
        self.fields = fields
        self.csv = csv.DictWriter(stream, fieldnames=fields, lineterminator="\n")
        self.is_csv = file_format == "csv"
        if self.is_csv:
            self.csv.writeheader()

    def write(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows."""
        for row in rows:
            if self.is_csv:
                self.csv.writerow({field: self.cell(field, row[field]) for field in self.fields})
            else:
                self.stream.write(json_line({field: row[field] for field in self.fields}) + "\n")

    @staticmethod
    def cell(field: str, value: Any) -> Any:
        """A CSV cell: list columns as a JSON array."""
        return json.dumps(value, ensure_ascii=False) if field in LIST_FIELDS else value
