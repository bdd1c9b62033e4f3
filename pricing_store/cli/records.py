"""Reading and writing pricing rows as JSON Lines or CSV, exactly.

Numbers are read as decimals, never through float, and written as their exact digits.
Lines are read as UTF-8 (a leading byte order mark is skipped), one at a time and at most
MAX_LINE_BYTES each, so a huge or undecodable line is reported with its number.
In CSV, list columns hold a JSON array (`["USA", "Mexico"]`) and an empty cell means the
column is left to its default; a text cell a spreadsheet would run as a formula (`=`, `+`,
`-`, `@`, tab, CR) is written with a leading `'`, which reading takes off again.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, BinaryIO, TextIO

FORMATS = ("jsonl", "csv")
# The longest line read: a row of the largest valid lists fits well within it.
MAX_LINE_BYTES = 1 << 20


@dataclass(frozen=True)
class Columns:
    """What the CLI needs to know of the package's tables, read from the models' metadata."""

    tables: tuple[str, ...]
    lists: frozenset[str]  # JSONB arrays: a JSON array in a CSV cell
    numbers: frozenset[str]  # NUMERIC: exact digits


@cache
def columns() -> Columns:
    """The tables and their kinds of columns.

    The models are loaded on first use only: a command that reads no rows starts without
    SQLAlchemy.
    """
    from sqlalchemy import Numeric
    from sqlalchemy.dialects.postgresql import JSONB

    from pricing_store.models import Base

    tables = Base.metadata.sorted_tables
    every = [column for table in tables for column in table.columns]
    return Columns(
        tables=tuple(table.name for table in tables),
        lists=frozenset(column.name for column in every if isinstance(column.type, JSONB)),
        numbers=frozenset(column.name for column in every if isinstance(column.type, Numeric)),
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


@dataclass(frozen=True)
class Header:
    """A CSV file's header line: the columns its rows give."""

    line: int
    fields: tuple[str, ...]


Read = tuple[int, "dict[str, Any] | RecordError | Header"]


def read_records(stream: BinaryIO, file_format: str) -> Iterator[Read]:
    """Yield (line number, record) for every record; a malformed line yields its error.

    A CSV stream yields its `Header` first. A leading UTF-8 byte order mark is skipped.
    """
    if file_format == "csv":
        yield from read_csv(stream)
    else:
        yield from read_jsonl(stream)


def physical_lines(stream: BinaryIO) -> Iterator[tuple[int, str | RecordError]]:
    """The stream's lines decoded, each read whole only if it is at most MAX_LINE_BYTES."""
    number = 0
    while chunk := stream.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(chunk) > MAX_LINE_BYTES and not chunk.endswith(b"\n"):
            while chunk and not chunk.endswith(b"\n"):  # skipped, never held whole
                chunk = stream.readline(MAX_LINE_BYTES + 1)
            yield number, RecordError(number, "line", f"is longer than {MAX_LINE_BYTES:,} bytes")
            continue
        if number == 1:
            chunk = chunk.removeprefix(codecs.BOM_UTF8)  # Excel's UTF-8 files begin with one
        try:
            yield number, chunk.decode("utf-8")
        except UnicodeDecodeError as error:
            rule = f"is not UTF-8 (byte 0x{chunk[error.start]:02x} at column {error.start + 1})"
            yield number, RecordError(number, "line", rule)


def read_jsonl(stream: BinaryIO) -> Iterator[Read]:
    """Records of a JSON Lines stream; blank lines are skipped."""
    for number, line in physical_lines(stream):
        if isinstance(line, RecordError):
            yield number, line
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_float=Decimal, parse_int=Decimal)
        except json.JSONDecodeError as error:
            yield number, RecordError(number, "line", f"is not valid JSON ({error.msg})")
            continue
        except (RecursionError, ValueError):
            yield number, RecordError(number, "line", "is not valid JSON (nested too deeply)")
            continue
        if not isinstance(record, dict):
            yield number, RecordError(number, "line", "must be a JSON object")
            continue
        yield number, record


def read_csv(stream: BinaryIO) -> Iterator[Read]:
    """Records of a CSV stream with a header line; every row has the header's fields."""
    unreadable: list[RecordError] = []

    def texts() -> Iterator[str]:
        for _, line in physical_lines(stream):
            if isinstance(line, RecordError):
                unreadable.append(line)
                yield "\n"  # an empty row, which the reader skips: numbering stays right
            else:
                yield line

    reader = csv.reader(texts())
    rows = csv_rows(reader)
    header = next(rows, None)
    yield from ((error.line, error) for error in unreadable)
    unreadable.clear()
    if header is None:
        return
    if isinstance(header, RecordError):
        yield header.line, header
        return
    fields = tuple(field.strip() for field in header)
    yield reader.line_num, Header(reader.line_num, fields)
    for row in rows:
        yield from ((error.line, error) for error in unreadable)
        unreadable.clear()
        number = reader.line_num
        if isinstance(row, RecordError):
            yield number, row
            continue
        if not row:
            continue
        if len(row) != len(fields):
            rule = f"has {len(row)} fields, the header has {len(fields)}"
            yield number, RecordError(number, "line", rule)
            continue
        try:
            yield number, record_of(number, fields, row)
        except RecordError as error:
            yield number, error
    yield from ((error.line, error) for error in unreadable)


def csv_rows(reader: Any) -> Iterator[list[str] | RecordError]:
    """The reader's rows, reading on past a row it cannot parse.

    Such a row (a field over the reader's size limit, say) comes as that line's error.
    """
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield RecordError(reader.line_num, "line", f"is not valid CSV ({error})")


def record_of(line: int, fields: tuple[str, ...], row: list[str]) -> dict[str, Any]:
    """A CSV row as a record; an empty cell leaves its column to the default."""
    return {
        field: parse_list(line, field, cell) if field in columns().lists else unguarded(cell)
        for field, cell in zip(fields, row, strict=True)
        if cell != ""
    }


def parse_list(line: int, field: str, cell: str) -> Any:
    """A list cell's JSON array."""
    try:
        return json.loads(cell)
    except (RecursionError, ValueError):
        raise RecordError(line, field, "must be a JSON array of strings") from None


# What makes a spreadsheet read a cell as a formula (OWASP's list), and the quote that stops
# it. A cell starting with the quote itself is quoted too, so reading back is exact.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
GUARD = "'"


def guarded(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, with a quote in front."""
    if isinstance(value, str) and value.startswith((*FORMULA_STARTS, GUARD)):
        return GUARD + value
    return value


def unguarded(cell: str) -> str:
    """A text cell as it was before `guarded`."""
    return cell.removeprefix(GUARD)


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
    """Writes rows in a form `read_records` reads back to the same values, page by page.

    A row is a sequence of values in `fields` order (further values are ignored), as the
    driver returns it: numbers as
    Decimal, list columns as the JSON text PostgreSQL prints for JSONB, which is exactly
    what `json.dumps(..., ensure_ascii=False)` makes of the list, so it is written as it is.
    """

    def __init__(self, stream: TextIO, file_format: str, fields: list[str]) -> None:
        self.stream = stream
        self.is_csv = file_format == "csv"
        self.csv = csv.writer(stream, lineterminator="\n")
        # Each JSON line is `{"field": value, ...}`: the keys' text is made once.
        self.prefixes = [f"{json.dumps(field)}: " for field in fields]
        self.formats = [json_text_of(field) for field in fields]
        if self.is_csv:
            self.csv.writerow(fields)

    def write(self, rows: Iterable[Sequence[Any]]) -> None:
        """Append rows."""
        if self.is_csv:
            width = len(self.formats)  # a row may carry more columns (the keyset's)
            self.csv.writerows([guarded(value) for value in row[:width]] for row in rows)
            return
        pairs = list(zip(self.prefixes, self.formats, strict=True))
        self.stream.writelines(
            "{"
            + ", ".join(
                prefix + form(value) for (prefix, form), value in zip(pairs, row, strict=False)
            )
            + "}\n"
            for row in rows
        )


def json_text_of(field: str) -> Callable[[Any], str]:
    """How a column's value is written in a JSON line (as `json_value` would)."""
    if field in columns().lists:
        return str  # already JSON text
    if field in columns().numbers:
        return str  # a Decimal's exact digits
    return encode_basestring  # what json.dumps(..., ensure_ascii=False) makes of a string
