"""Async repositories over the caller's `AsyncSession`."""

from pricing_store.repositories.base import Repository
from pricing_store.repositories.brand_group import BrandGroupRepository
from pricing_store.repositories.model import ModelRepository

__all__ = ["BrandGroupRepository", "ModelRepository", "Repository"]
