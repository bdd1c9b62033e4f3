"""A small multi-tenant host application that adopts pricing_store (see docs/adopting.md)."""
