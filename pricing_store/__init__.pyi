"""The public names of `pricing_store`, listed once.

Type checkers read them here; `__init__.py` imports each from the module named here the
first time it is used.
"""

from .db import create_engine as create_engine, create_session_factory as create_session_factory
from .errors import (
    DatabaseTimeoutError as DatabaseTimeoutError,
    DatabaseUnavailableError as DatabaseUnavailableError,
    DuplicateKeyError as DuplicateKeyError,
    GenerationTimeoutError as GenerationTimeoutError,
    InvalidValueError as InvalidValueError,
    LookupClosedError as LookupClosedError,
    PricingStoreError as PricingStoreError,
    SchemaNotMigratedError as SchemaNotMigratedError,
)
from .lookup import (
    LookupStats as LookupStats,
    PriceGenerator as PriceGenerator,
    PriceReference as PriceReference,
    PricingLookup as PricingLookup,
)
from .models import Base as Base, BrandGroup as BrandGroup, Model as Model
from .repositories import (
    BrandGroupRepository as BrandGroupRepository,
    ModelRepository as ModelRepository,
)
from .repositories.bulk import UpsertResult as UpsertResult
from .repositories.paging import Page as Page
