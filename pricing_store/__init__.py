"""Async PostgreSQL data layer for second-hand clothing pricing reference data."""

from pricing_store.bulk import UpsertResult
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
from pricing_store.generation import PriceGenerator
from pricing_store.lookup import PricingLookup
from pricing_store.models import Base, BrandGroup, Model
from pricing_store.paging import Page
from pricing_store.reference import PriceReference
from pricing_store.repositories import BrandGroupRepository, ModelRepository
from pricing_store.stats import LookupStats

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
