"""The generation leases' table, as a Core `Table` the lease SQL is written from.

It has a metadata of its own: it is no model (no rows are mapped), `Base.metadata` stays
the two pricing tables that hosts reference and `create_all` builds, and the drift check
compares only those.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, MetaData, Table, Text

from pricing_store.models.base import SCHEMA

LEASES = Table(
    "pricing_store_generation_leases",
    MetaData(schema=SCHEMA),
    Column("lease_key", Text, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
