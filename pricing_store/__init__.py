"""Async PostgreSQL data layer for second-hand clothing pricing reference data.

The public names, listed once in `__init__.pyi`, are imported on first use, so that
`import pricing_store.cli` (the `pricing-store` command) loads only what the command it
runs needs.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
