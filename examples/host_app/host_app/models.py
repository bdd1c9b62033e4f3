"""The host's own models: a shared table in `public`, and tables in every tenant's schema.

`Product` references pricing_store's `BrandGroup` by its column object: the foreign key
crosses from the host's MetaData to the package's, and from a tenant's schema to `public`.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import ForeignKey, Index, MetaData, Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from pricing_store.models import BrandGroup


class HostBase(DeclarativeBase):
    """The host's declarative base, with a MetaData of its own."""

    metadata = MetaData()


class ActionType(HostBase):
    """A shared lookup table in `public`, owned by the host."""

    __tablename__ = "action_types"
    __table_args__ = ({"schema": "public"},)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)


class Product(HostBase):
    """A tenant's product, priced from the Brand×Group it references.

    No schema: each tenant's rows live in its own `user_N.products`, reached through
    `schema_translate_map={None: "user_N"}`.
    """

    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    brand_group_id: Mapped[int] = mapped_column(ForeignKey(BrandGroup.id), index=True)
    model: Mapped[str | None] = mapped_column(String(100))
    condition: Mapped[Decimal] = mapped_column(Numeric(3, 2), default=Decimal("1.00"))

    # The class itself, not its name: pricing_store's models live in a registry of their own.
    brand_group: Mapped[BrandGroup] = relationship(BrandGroup, lazy="raise")


class CatalogueModel(HostBase):
    """A tenant's own catalogue of product models, in `user_N.models`.

    Named like pricing_store's `public.models` on purpose, index included: in a tenant
    pass the host's autogenerate must compare this one and leave the package's alone.
    """

    __tablename__ = "models"
    __table_args__ = (Index("idx_models_brand", "brand"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    brand: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
