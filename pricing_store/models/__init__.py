"""SQLAlchemy models of the package's two tables."""

from pricing_store.models.base import Base
from pricing_store.models.brand_group import BrandGroup
from pricing_store.models.model import Model

__all__ = ["Base", "BrandGroup", "Model"]
