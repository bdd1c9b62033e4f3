"""Async PostgreSQL data layer for second-hand clothing pricing reference data.

The names below are imported on first use, so that `import pricing_store.cli` (the
`pricing-store` command) loads only what the command it runs needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pricing_store.db import create_engine, create_session_factory
    from pricing_store.errors import (
        DatabaseTimeoutError,
        DatabaseUnavailableError,
        DuplicateKeyError,
        GenerationTimeoutError,
        InvalidValueError,
        PricingStoreError,
        SchemaNotMigratedError,
    )
    from pricing_store.lookup import LookupStats, PriceGenerator, PriceReference, PricingLookup
    from pricing_store.models import Base, BrandGroup, Model
    from pricing_store.repositories import BrandGroupRepository, ModelRepository
    from pricing_store.repositories.bulk import UpsertResult
    from pricing_store.repositories.paging import Page

# Each public name and the module it lives in.
EXPORTS = {
    "create_engine": "pricing_store.db",
    "create_session_factory": "pricing_store.db",
    "DatabaseTimeoutError": "pricing_store.errors",
    "DatabaseUnavailableError": "pricing_store.errors",
    "DuplicateKeyError": "pricing_store.errors",
    "GenerationTimeoutError": "pricing_store.errors",
    "InvalidValueError": "pricing_store.errors",
    "PricingStoreError": "pricing_store.errors",
    "SchemaNotMigratedError": "pricing_store.errors",
    "LookupStats": "pricing_store.lookup",
    "PriceGenerator": "pricing_store.lookup",
    "PriceReference": "pricing_store.lookup",
    "PricingLookup": "pricing_store.lookup",
    "Base": "pricing_store.models",
    "BrandGroup": "pricing_store.models",
    "Model": "pricing_store.models",
    "BrandGroupRepository": "pricing_store.repositories",
    "ModelRepository": "pricing_store.repositories",
    "UpsertResult": "pricing_store.repositories.bulk",
    "Page": "pricing_store.repositories.paging",
}

__all__ = [
    "Base",
    "BrandGroup",
    "BrandGroupRepository",
    "DatabaseTimeoutError",
    "DatabaseUnavailableError",
    "DuplicateKeyError",
    "GenerationTimeoutError",
    "InvalidValueError",
    "LookupStats",
    "Model",
    "ModelRepository",
    "Page",
    "PriceGenerator",
    "PriceReference",
    "PricingLookup",
    "PricingStoreError",
    "SchemaNotMigratedError",
    "UpsertResult",
    "create_engine",
    "create_session_factory",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is asked for."""
    if name not in EXPORTS:
        raise AttributeError(f"module 'pricing_store' has no attribute {name!r}")
    value = getattr(importlib.import_module(EXPORTS[name]), name)
    globals()[name] = value
    return value
