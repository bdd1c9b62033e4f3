"""The host's service: a lifespan that starts and stops a PricingLookup beside its engine.

`lifespan` is what an ASGI framework's lifespan hook (or a worker's main) wraps the
application in; `price_of` is one request's work.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import joinedload

from host_app.models import Product
from host_app.tenants import checked_tenant
from pricing_store import PriceGenerator, PricingLookup

CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Services:
    """What a request handler needs: the host's sessions and the pricing lookup."""

    sessions: async_sessionmaker[AsyncSession]
    pricing: PricingLookup


@contextlib.asynccontextmanager
async def lifespan(url: str, generator: PriceGenerator | None = None) -> AsyncIterator[Services]:
    """The host's own engine, and a caching PricingLookup on it, for the service's life."""
    engine = create_async_engine(
        url,
        pool_size=5,
        connect_args={"server_settings": {"application_name": "host_app"}},
    )
    try:
        async with PricingLookup(engine, cache_size=CACHE_SIZE, generator=generator) as pricing:
            yield Services(async_sessionmaker(engine, expire_on_commit=False), pricing)
    finally:
        await engine.dispose()


async def price_of(services: Services, tenant: str, product_id: int) -> Decimal:
    """A tenant's product priced from its Brand×Group (and model), as the algorithm reads it.

    Raises:
        LookupError: if the tenant has no such product.
    """
    async with services.sessions() as session:
        product = await session.scalar(
            select(Product)
            .options(joinedload(Product.brand_group))
            .where(Product.id == product_id),
            execution_options={"schema_translate_map": {None: checked_tenant(tenant)}},
        )
    if product is None:
        raise LookupError(f"{tenant}: no product {product_id}")
    group = product.brand_group
    reference = await services.pricing.get_or_generate(group.brand, group.group_name, product.model)
    return (reference.base_price * reference.coefficient * product.condition).quantize(
        Decimal("0.01")
    )
