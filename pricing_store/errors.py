"""The package's error hierarchy, and the one place database errors are translated.

Errors are classified by SQLSTATE and constraint name, never by message text, which the
server localises.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import asyncpg
from sqlalchemy.exc import DBAPIError, TimeoutError as SQLAlchemyTimeoutError

Method = TypeVar("Method", bound=Callable[..., Awaitable[Any]])
_driver = asyncpg.exceptions

# The driver's errors that mean the connection is gone or was never made: what a fresh
# connection (or a failover) may cure. The one list; db.py and the lookup's pool add OSError,
# which they know comes from the driver (a caller's generator may raise its own).
CONNECTION_GONE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # class 08
    _driver.AdminShutdownError,  # 57P01
    _driver.CrashShutdownError,  # 57P02
    _driver.CannotConnectNowError,  # 57P03
    _driver.TargetServerAttributeNotMatched,  # no listed host is (yet) the primary
    asyncpg.InterfaceError,  # the connection is closed
    ConnectionError,
    ssl.SSLError,
)

# SQLSTATEs the package acts on, as the driver's own classes name them.
UNIQUE_VIOLATION = _driver.UniqueViolationError.sqlstate
CHECK_VIOLATION = _driver.CheckViolationError.sqlstate
NOT_NULL_VIOLATION = _driver.NotNullViolationError.sqlstate
LOCK_NOT_AVAILABLE = _driver.LockNotAvailableError.sqlstate
QUERY_CANCELED = _driver.QueryCanceledError.sqlstate
UNDEFINED_TABLE = _driver.UndefinedTableError.sqlstate


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


class SchemaNotMigratedError(PricingStoreError):
    """A table the package needs does not exist: the migrations have not been run."""

    def __init__(self, detail: str) -> None:
        from pricing_store.checkout import migrate_command

        super().__init__(f'{detail}: the database is not migrated (run "{migrate_command()}")')


class LookupClosedError(PricingStoreError):
    """The `PricingLookup` was closed: it serves no call any more (make a new one)."""

    def __init__(self) -> None:
        super().__init__("the PricingLookup is closed")


class DatabaseTimeoutError(PricingStoreError, TimeoutError):
    """A lock, a statement or a pooled connection was waited for too long."""


# SQLSTATE classes and codes: https://www.postgresql.org/docs/current/errcodes-appendix.html
# Connection exceptions, insufficient resources (too many connections, out of memory or
# disk), authorization failures.
UNAVAILABLE_CLASSES = ("08", "53", "28")
UNAVAILABLE_STATES = {
    _driver.InvalidCatalogNameError.sqlstate: "no such database",
    _driver.ReadOnlySQLTransactionError.sqlstate: "the server is read-only (a standby)",
    _driver.AdminShutdownError.sqlstate: "the server is shutting down",
    _driver.CrashShutdownError.sqlstate: "the server crashed",
    _driver.CannotConnectNowError.sqlstate: "the server is starting up or shutting down",
}
TIMEOUT_STATES = {
    LOCK_NOT_AVAILABLE: "lock_timeout: a lock was waited for too long",
    QUERY_CANCELED: "statement_timeout (or a cancel): the statement ran too long",
}


def driver_error_of(error: BaseException) -> BaseException:
    """The driver's own exception inside SQLAlchemy's wrappers (or the error itself)."""
    if isinstance(error, DBAPIError) and error.orig is not None:
        return error.orig.__cause__ or error.orig
    return error


def translate(error: BaseException, where: str = "the database") -> PricingStoreError | None:
    """The package error for a failure on the database side, or None when it is not one.

    Classified by SQLSTATE and constraint name, never by message text. Works on SQLAlchemy's
    wrappers and on asyncpg's own exceptions alike.

    Args:
        error: What SQLAlchemy or asyncpg raised.
        where: Host and database, for DatabaseUnavailableError's message.
    """
    if isinstance(error, PricingStoreError):
        return error
    if isinstance(error, SQLAlchemyTimeoutError):  # the engine's pool
        return DatabaseTimeoutError(f"no pooled connection free in time ({first_line(error)})")
    driver_error = driver_error_of(error)
    sqlstate = getattr(driver_error, "sqlstate", None) or getattr(
        getattr(error, "orig", None), "sqlstate", None
    )
    message = first_line(driver_error)
    if isinstance(sqlstate, str):
        if sqlstate == UNIQUE_VIOLATION:
            return DuplicateKeyError(
                getattr(driver_error, "constraint_name", None),
                getattr(driver_error, "detail", None),
            )
        if sqlstate == CHECK_VIOLATION:
            constraint = getattr(driver_error, "constraint_name", None)
            return InvalidValueError(constraint or "row", "violates a CHECK constraint")
        if sqlstate == NOT_NULL_VIOLATION:
            column = getattr(driver_error, "column_name", None)
            return InvalidValueError(column or "row", "must not be None")
        if sqlstate[:2] in UNAVAILABLE_CLASSES or sqlstate in UNAVAILABLE_STATES:
            return DatabaseUnavailableError(where, message)
        if sqlstate in TIMEOUT_STATES:
            return DatabaseTimeoutError(f"{TIMEOUT_STATES[sqlstate]} ({message})")
        if sqlstate == UNDEFINED_TABLE:
            return SchemaNotMigratedError(message)
        return None
    if isinstance(driver_error, CONNECTION_GONE):
        return DatabaseUnavailableError(where, message)
    return None


def host_and_database(url: Any) -> str:
    """Host, port and database of a URL, for messages; never the password."""
    listed = url.query.get("host")
    host = url.host or (",".join(listed) if isinstance(listed, tuple) else listed) or "localhost"
    port = f":{url.port}" if url.port else ""
    return f"{host}{port}/{url.database or ''}"


def first_line(error: BaseException) -> str:
    """An error's message, first line only."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def translated(method: Method) -> Method:
    """Let `method` raise only the package's errors for failures on the database side.

    The original exception stays as `__cause__`. The method's object names its server in
    a `location` attribute.
    """

    @functools.wraps(method)
    async def wrapper(owner: Any, *arguments: Any, **options: Any) -> Any:
        try:
            return await method(owner, *arguments, **options)
        except PricingStoreError:
            raise
        except Exception as error:
            raise_translated(error, owner.location)

    return wrapper  # type: ignore[return-value]


def package_error(error: BaseException, where: str) -> PricingStoreError:
    """Its translation, or a PricingStoreError naming `where` with the driver's message."""
    return translate(error, where) or refused(error, where)


def refused(error: BaseException, where: str) -> PricingStoreError:
    """A plain PricingStoreError naming `where`, with the driver's message."""
    return PricingStoreError(f"{where}: {first_line(driver_error_of(error))}")


def raise_translated(error: Exception, where: str) -> NoReturn:
    """Raise the package's error for a failure on the database side, from it.

    A statement the server refused for a reason no other error names is a plain
    PricingStoreError. Anything else (a package error, a lost connection's OSError, an
    error of the caller's own code) is raised as it is.
    """
    if isinstance(error, PricingStoreError):
        raise error
    translation = translate(error, where)
    if translation is None and isinstance(driver_error_of(error), asyncpg.PostgresError):
        translation = refused(error, where)
    if translation is None:
        raise error
    raise translation from error
