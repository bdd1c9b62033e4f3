"""Exporting a table: plain rows in keyset pages, straight from the driver.

The same order (`created_at DESC, id DESC`) and the same text as reading the rows through
the repositories, at a fraction of the cost: no ORM object per row.
"""

from __future__ import annotations

import sys

from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.pool import NullPool

from pricing_store.cli.importer import TABLES
from pricing_store.cli.records import RecordWriter
from pricing_store.db import create_engine, driver_connector, log_statement
from pricing_store.repositories.statements import table_of

EXPORT_PAGE = 5_000


def page_sql(table: str, fields: list[str], *, after: bool) -> str:
    """A page of the table's rows, newest first, after the row `($2, $3)` names if `after`.

    JSONB lists are read as their JSON text, written as they are.
    """
    target = table_of(TABLES[table])
    selected = [
        f"{field}::text" if isinstance(target.c[field].type, JSONB) else field for field in fields
    ]
    keyset = "WHERE (created_at, id) < ($2, $3) " if after else ""
    return (
        f"SELECT {', '.join(selected)}, created_at, id FROM {target.fullname} {keyset}"
        "ORDER BY created_at DESC, id DESC LIMIT $1"
    )


async def export_table(url: str, table: str, file_format: str) -> None:
    """Write every row of `table` to standard output in `file_format`.

    Raises:
        DatabaseUnavailableError: if the server cannot be reached.
    """
    fields = list(TABLES[table].field_rules)
    engine = create_engine(url, poolclass=NullPool)
    connection = await driver_connector(engine)()
    try:
        writer = RecordWriter(sys.stdout, file_format, fields)
        first, following = page_sql(table, fields, after=False), page_sql(table, fields, after=True)
        log_statement(first, (EXPORT_PAGE,))
        rows = await connection.fetch(first, EXPORT_PAGE)
        while rows:
            writer.write(rows)
            if len(rows) < EXPORT_PAGE:
                return
            last = rows[-1]
            log_statement(following, (EXPORT_PAGE, last["created_at"], last["id"]))
            rows = await connection.fetch(following, EXPORT_PAGE, last["created_at"], last["id"])
    finally:
        await connection.close()
        await engine.dispose()
