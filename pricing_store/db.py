"""Engine and session factory; DATABASE_URL handling. Nothing here connects at import."""

from __future__ import annotations

import logging
import os
import re
import uuid
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine as _create_async_engine,
)
from sqlalchemy.util import greenlet_spawn

from pricing_store.errors import (
    CONNECTION_GONE,
    DatabaseUnavailableError,
    InvalidValueError,
    first_line,
    host_and_database,
    translate,
)

DATABASE_URL_VARIABLE = "DATABASE_URL"
ASYNC_DRIVER = "postgresql+asyncpg"
ACCEPTED_SCHEMES = frozenset({"postgres", "postgresql", ASYNC_DRIVER})
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
# Seconds to wait for a connection: a server that is gone should fail a call fast.
CONNECT_TIMEOUT = 10.0
# Errors that mean the server cannot be reached or dropped the connection: at connect time,
# every OSError comes from the driver.
UNREACHABLE: tuple[type[BaseException], ...] = (OSError, *CONNECTION_GONE)


@dataclass(frozen=True)
class DriverSettings:
    """How to reach the server with asyncpg directly: its URL and connect() arguments."""

    url: URL
    connect_args: dict[str, Any] = field(default_factory=dict)
    pgbouncer: bool = False

    def dsn(self) -> str:
        """The URL as asyncpg's own connect() reads it (with its password: never print it).

        Several hosts go into the host part, comma-separated, as libpq and asyncpg read
        them (asyncpg keeps only the last of repeated `?host=` parameters).
        """
        hosts = hosts_of(self.url)
        if len(hosts) < 2:
            return self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        rest = dict(self.url.query)
        del rest["host"]
        text = self.url.set(drivername="postgresql", host=None, port=None, query=rest)
        scheme, _, after = text.render_as_string(hide_password=False).partition("://")
        userinfo, at, tail = after.rpartition("@")
        return f"{scheme}://{userinfo}{at}{','.join(hosts)}{tail}"

    def where(self) -> str:
        """Host and database, for messages; never the password."""
        return host_and_database(self.url)


# The driver settings of every engine this module made, for code that reads around it.
_SETTINGS: weakref.WeakKeyDictionary[Engine, DriverSettings] = weakref.WeakKeyDictionary()


def database_url(url: str | URL | None = None) -> URL:
    """Return `url`, or DATABASE_URL, as a URL driven by asyncpg.

    `postgres://`, `postgresql://` and `postgresql+asyncpg://` are all accepted.

    Raises:
        InvalidValueError: if no URL is given and DATABASE_URL is unset, or the URL is not
            a PostgreSQL URL.
    """
    raw = url if url is not None else os.environ.get(DATABASE_URL_VARIABLE)
    if not raw:
        raise InvalidValueError("url", f"no URL given and {DATABASE_URL_VARIABLE} is not set")
    try:
        parsed = make_url(with_hosts_in_query(raw) if isinstance(raw, str) else raw)
        parsed.port  # noqa: B018 (parsed lazily: a bad port raises here)
    except (ArgumentError, ValueError):
        raise InvalidValueError(
            "url", "is not a database URL (postgresql://user@host:port/database)"
        ) from None
    if parsed.drivername not in ACCEPTED_SCHEMES:
        raise InvalidValueError(
            "url", f"must be a PostgreSQL URL (postgresql://...), not {parsed.drivername}://"
        )
    if len(hosts_of(parsed)) > 1 and "target_session_attrs" not in parsed.query:
        # Writes, LISTEN and leases must reach the primary, wherever it is now.
        parsed = parsed.update_query_dict({"target_session_attrs": "read-write"})
    return parsed.set(drivername=ASYNC_DRIVER)


# libpq's multi-host form: `scheme://[user[:password]@]host1[:port1],host2[:port2][/db][?...]`.
LIBPQ_HOSTS = re.compile(
    r"^(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^@/?]*@)?(?P<hosts>[^/?@]*,[^/?@]*)(?P<rest>[/?].*)?$",
    re.IGNORECASE,
)


def with_hosts_in_query(raw: str) -> str:
    """Libpq's comma-separated hosts as SQLAlchemy spells them: `?host=h1:p1&host=h2:p2`."""
    found = LIBPQ_HOSTS.match(raw)
    if found is None:
        return raw
    path, _, query = (found["rest"] or "/").partition("?")
    hosts = "&".join(f"host={host}" for host in found["hosts"].split(",") if host)
    return f"{found['scheme']}{found['user'] or ''}{path}?{hosts}{'&' + query if query else ''}"


def hosts_of(url: URL) -> tuple[str, ...]:
    """The URL's `host:port` entries: one, or several for a multi-host URL."""
    listed = url.query.get("host")
    if isinstance(listed, tuple):
        return listed
    return (listed,) if listed else ((url.host or "",))


def driver_settings(url: str | URL | None = None, *, pgbouncer: bool = False) -> DriverSettings:
    """Split the URL's own flags (`sslmode`, `application_name`, `pgbouncer`) into asyncpg's terms.

    libpq's `sslmode` becomes asyncpg's `ssl` argument and `application_name` a server
    setting (asyncpg.connect takes neither by that name).

    Raises:
        InvalidValueError: if the URL is not a PostgreSQL URL or `sslmode` is unknown.
    """
    parsed = database_url(url)
    query = dict(parsed.query)
    flagged = str(query.pop("pgbouncer", "")).lower() in TRUE_WORDS
    connect_args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT}
    if "sslmode" in query:
        mode = str(query.pop("sslmode"))
        if mode not in SSL_MODES:
            raise InvalidValueError(
                "sslmode", f"must be one of {', '.join(SSL_MODES)}, not {mode!r}"
            )
        connect_args["ssl"] = mode
    if "application_name" in query:
        connect_args["server_settings"] = {"application_name": str(query.pop("application_name"))}
    pgbouncer = pgbouncer or flagged
    if pgbouncer:
        # Transaction pooling hands each transaction any server connection: prepared
        # statements must not outlive a statement, nor be cached by name.
        connect_args["statement_cache_size"] = 0
    return DriverSettings(parsed.set(query=query), connect_args, pgbouncer)


def settings_of(engine: AsyncEngine | Engine) -> DriverSettings:
    """The driver settings of an engine (async or sync, made here or not)."""
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    found = _SETTINGS.get(sync)
    return found if found is not None else DriverSettings(sync.url, {"timeout": CONNECT_TIMEOUT})


def create_engine(
    url: str | URL | None = None, *, pgbouncer: bool = False, **options: Any
) -> AsyncEngine:
    """Create an async engine on asyncpg; `options` go to SQLAlchemy's `create_async_engine`.

    Connections are checked before use (`pool_pre_ping`), so a restarted server or killed
    connections cost no failed call. `pgbouncer=True` (or `?pgbouncer=true` in the URL)
    makes it safe behind PgBouncer in transaction mode. A server that cannot be reached
    raises `DatabaseUnavailableError`.

    Raises:
        InvalidValueError: if the URL is missing or not a PostgreSQL URL.
    """
    settings = driver_settings(url, pgbouncer=pgbouncer)
    connect_args = dict(settings.connect_args)
    if settings.pgbouncer:
        connect_args["prepared_statement_cache_size"] = 0
        connect_args["prepared_statement_name_func"] = unique_statement_name
    connect_args.update(options.pop("connect_args", {}))
    options.setdefault("pool_pre_ping", True)
    engine = _create_async_engine(settings.url, connect_args=connect_args, **options)
    _SETTINGS[engine.sync_engine] = settings
    event.listen(engine.sync_engine, "do_connect", connect_or_report(settings))
    event.listen(engine.sync_engine, "handle_error", report_unavailable)
    return engine


def connect_or_report(settings: DriverSettings) -> Any:
    """A `do_connect` hook: connect as SQLAlchemy would, reporting an unreachable server."""

    def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        try:
            return dialect.connect(*cargs, **cparams)
        except UNREACHABLE as error:
            raise DatabaseUnavailableError(settings.where(), first_line(error)) from error
        except Exception as error:  # refused authentication, no such database or role
            refused = translate(error, settings.where())
            if isinstance(refused, DatabaseUnavailableError):
                raise refused from error
            raise

    return connect


def unique_statement_name() -> str:
    """A prepared statement name no other client of a PgBouncer server connection uses."""
    return f"__pricing_store_{uuid.uuid4().hex}__"


def report_unavailable(context: ExceptionContext) -> None:
    """Turn "cannot reach the server" into DatabaseUnavailableError (never during pre-ping).

    Raises:
        DatabaseUnavailableError: naming host and database, never the password.
    """
    error = context.original_exception
    if context.is_pre_ping or not isinstance(error, Exception):
        return  # a cancellation stays one; SQLAlchemy has invalidated the connection
    if not (context.is_disconnect or isinstance(error, UNREACHABLE)):
        return
    where = settings_of(context.engine).where() if context.engine is not None else "?"
    raise DatabaseUnavailableError(where, first_line(error)) from error


# The statements the package sends to asyncpg itself, bypassing SQLAlchemy's events and
# `echo` (one-row writes, COPY, lookups, generation, export), at DEBUG.
SQL_LOG = logging.getLogger("pricing_store.sql")


def log_statement(sql: str, arguments: Sequence[Any] = ()) -> None:
    """Log a statement sent to the driver directly (only when DEBUG is on for it)."""
    if SQL_LOG.isEnabledFor(logging.DEBUG):
        SQL_LOG.debug("%s %r", " ".join(sql.split()), tuple(arguments))


# The password of a URL (`scheme://user:password@host`), wherever one stands in a text.
URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)([^\s@]*)(@)", re.IGNORECASE)


def hide_passwords(text: str) -> str:
    """The text with the password of every URL in it replaced by `***`, nothing else changed."""
    return URL_PASSWORD.sub(r"\1***\3", text)


def driver_connector(engine: AsyncEngine) -> Callable[[], Awaitable[Any]]:
    """Open asyncpg connections outside the engine's pool, exactly as the engine connects.

    A pool of the engine's own kind and settings, but of its own (`Pool.recreate`), makes
    each connection: the engine's URL, `connect_args`, `async_creator` and connect events
    all apply, and the engine's pool is never drawn from. Each connection is detached at
    once and belongs to the caller, who closes it.

    Raises:
        DatabaseUnavailableError: from the returned function, if the server cannot be
            reached or refuses the login.
    """
    pool = engine.sync_engine.pool.recreate()
    where = settings_of(engine).where()

    async def connect() -> Any:
        try:
            proxied = await greenlet_spawn(pool.connect)
        except DatabaseUnavailableError:
            raise
        except Exception as error:
            refused = translate(error, where)
            if isinstance(refused, DatabaseUnavailableError):
                raise refused from error
            if isinstance(error, OSError):
                raise DatabaseUnavailableError(where, first_line(error)) from error
            raise
        driver = proxied.driver_connection
        proxied.detach()
        return driver

    return connect


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Create sessions whose objects stay readable after commit, without lazy I/O."""
    return async_sessionmaker(engine, expire_on_commit=False)


def require_read_write(settings: DriverSettings) -> None:
    """Refuse a multi-host URL that may reach a standby for LISTEN, leases and stores.

    Raises:
        InvalidValueError: naming the setting that would make it reach the primary.
    """
    wanted = settings.url.query.get("target_session_attrs", "read-write")
    if len(hosts_of(settings.url)) > 1 and wanted not in ("read-write", "primary"):
        raise InvalidValueError(
            "listen_to",
            f"lists several hosts with target_session_attrs={wanted}: changes are heard, "
            "and generated rows written, on the primary; pass an engine whose URL says "
            "target_session_attrs=read-write",
        )
