"""The `pricing-store` command line."""

from pricing_store.cli.app import app, main

__all__ = ["app", "main"]
