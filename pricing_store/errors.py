"""The package's error hierarchy, and the one place database errors are translated.

Errors are classified by SQLSTATE and constraint name, never by message text, which the
server localises.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

UNIQUE_VIOLATION = "23505"
CHECK_VIOLATION = "23514"
NOT_NULL_VIOLATION = "23502"


class PricingStoreError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidValueError(PricingStoreError, ValueError):
    """A value broke a rule; the message names the field and the rule."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class DuplicateKeyError(PricingStoreError):
    """A write collided with an existing row on a unique constraint."""

    def __init__(self, constraint_name: str | None, detail: str | None = None) -> None:
        message = f"duplicate key violates unique constraint {constraint_name!r}"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.constraint_name = constraint_name


class DatabaseUnavailableError(PricingStoreError):
    """The server cannot be reached, or dropped the connection; retry later."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"database unavailable at {where}: {reason}")
        self.where = where
        self.reason = reason


class GenerationTimeoutError(PricingStoreError, TimeoutError):
    """A generator (an LLM call) ran past the lookup's `generation_timeout`."""

    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(f"generating {what} took longer than {seconds:g} s")
        self.what = what
        self.seconds = seconds


def translate(error: DBAPIError) -> PricingStoreError | None:
    """Return the package error for a driver error, or None when it has no translation.

    Args:
        error: The SQLAlchemy wrapper of the driver's exception.
    """
    sqlstate = getattr(error.orig, "sqlstate", None)
    driver_error = error.orig.__cause__ if error.orig is not None else None
    constraint = getattr(driver_error, "constraint_name", None)
    if sqlstate == UNIQUE_VIOLATION:
        return DuplicateKeyError(constraint, getattr(driver_error, "detail", None))
    if sqlstate == CHECK_VIOLATION:
        return InvalidValueError(constraint or "row", "violates a CHECK constraint")
    if sqlstate == NOT_NULL_VIOLATION:
        column = getattr(driver_error, "column_name", None)
        return InvalidValueError(column or "row", "must not be None")
    return None
