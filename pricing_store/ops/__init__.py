"""Operator tools: the development database, the drift check, migration safety, roles."""

from pricing_store.ops.migrating import alembic_config

__all__ = ["alembic_config"]
