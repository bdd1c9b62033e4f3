"""The read path: PricingLookup, PriceReference, the cache, the read connections, generation."""

from pricing_store.lookup.generator import PriceGenerator
from pricing_store.lookup.pricing_lookup import PricingLookup
from pricing_store.lookup.reference import PriceReference
from pricing_store.lookup.stats import LookupStats

__all__ = ["LookupStats", "PriceGenerator", "PriceReference", "PricingLookup"]
