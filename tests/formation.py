"""A pg_auto_failover formation of the run's own: a monitor and two nodes, synchronous.

It is what an operator of StoFlow would run for high availability: each node's keeper
(`pg_autoctl run`) supervises its PostgreSQL and reports to the monitor, which fails over
to the secondary when the primary stops answering. The services connect with the URL
`pg_autoctl show uri` prints (libpq's multi-host form, `target_session_attrs=read-write`).

The monitor's failure detection is made faster than its defaults (health checks every
second instead of 5 s, a node unhealthy after 3 s instead of 20 s), so that a run sees
several failovers in minutes; a production monitor keeps slower defaults to ride out
network blips, and its failovers take correspondingly longer.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.provision import free_port

INSTALL_HINT = (
    "pg_auto_failover is not installed: apt-get install postgresql-15-auto-failover "
    "pg-auto-failover-cli (the server's major version in the first name)"
)
# The monitor's settings for a run (milliseconds); see the module's docstring.
FAST_DETECTION = {
    "pgautofailover.health_check_period": 1000,
    "pgautofailover.health_check_timeout": 1000,
    "pgautofailover.health_check_max_retries": 1,
    "pgautofailover.health_check_retry_delay": 500,
    "pgautofailover.node_considered_unhealthy_timeout": 3000,
    "pgautofailover.startup_grace_period": 3000,
    # How long an unreachable primary is given to demote itself before the secondary is
    # promoted (30 s by default); it must exceed the keepers' network_partition_timeout.
    "pgautofailover.primary_demote_timeout": 5000,
}
# Each keeper's (seconds): a secondary waits this long for its WAL receiver to stop; a
# primary that reaches neither the monitor nor its standby this long demotes itself.
KEEPER_SETTINGS = {
    "timeout.prepare_promotion_walreceiver": "1",
    "timeout.network_partition_timeout": "3",
}


class FormationUnavailableError(RuntimeError):
    """pg_auto_failover cannot be had on this machine; the message says how to get it."""


def postgres_bin() -> Path:
    """The PostgreSQL binaries that have pg_auto_failover's extension, installed if need be.

    Raises:
        FormationUnavailableError: if it is absent and cannot be installed here.
    """
    found = _with_extension()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        majors = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
        if majors:
            major = majors[0].parts[-3]
            subprocess.run(
                [
                    "apt-get",
                    "install",
                    "-y",
                    "-qq",
                    f"postgresql-{major}-auto-failover",
                    "pg-auto-failover-cli",
                ],
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                check=False,
                capture_output=True,
            )
            found = _with_extension()
    if found is None or shutil.which("pg_autoctl") is None:
        raise FormationUnavailableError(INSTALL_HINT)
    return found


def _with_extension() -> Path | None:
    for control in sorted(
        Path("/usr/share/postgresql").glob("*/extension/pgautofailover.control"), reverse=True
    ):
        binaries = Path("/usr/lib/postgresql") / control.parts[-3] / "bin"
        if (binaries / "pg_ctl").exists():
            return binaries
    return None


class Node:
    """One data node: its keeper's process, which runs its PostgreSQL."""

    def __init__(self, name: str, directory: Path, port: int) -> None:
        self.name = name
        self.pgdata = directory / name
        self.port = port
        self.log = directory / f"{name}.log"
        self.keeper: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether its keeper is alive."""
        return self.keeper is not None and self.keeper.poll() is None


class Formation:
    """The monitor and two nodes under `directory`, started at once; `close()` stops all."""

    def __init__(self, directory: Path) -> None:
        self.bin = postgres_bin()
        self.directory = directory
        self.user = "postgres" if os.geteuid() == 0 else None  # PostgreSQL refuses root
        directory.mkdir(exist_ok=True)
        if self.user is not None:
            owner = pwd.getpwnam(self.user)
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        self._env = {
            **os.environ,
            "PATH": f"{self.bin}:{os.environ.get('PATH', '')}",
            "XDG_CONFIG_HOME": str(directory / "config"),
            "XDG_DATA_HOME": str(directory / "share"),
            "XDG_RUNTIME_DIR": str(directory / "run"),
            "PG_CONFIG": str(self.bin / "pg_config"),
            "PGHOST": "127.0.0.1",
        }
        monitor_port = free_port()
        self.monitor_url = (
            f"postgres://autoctl_node@127.0.0.1:{monitor_port}/pg_auto_failover?sslmode=disable"
        )
        self.monitor = Node("monitor", directory, monitor_port)
        self.nodes = [Node(f"node{n}", directory, free_port()) for n in (1, 2)]
        try:
            self._start_monitor()
            for node in self.nodes:
                self._create(node)
                self.start(node)
                self.wait_for({node.name: ("single", "primary", "secondary")}, 60)
            self.wait_until_stable(60)
        except BaseException:
            self.close()
            raise

    def _start_monitor(self) -> None:
        self.monitor.keeper = self._spawn(
            [
                *("create", "monitor", "--pgdata", str(self.monitor.pgdata)),
                *("--pgport", str(self.monitor.port), "--hostname", "127.0.0.1"),
                *("--auth", "trust", "--no-ssl", "--run"),
            ],
            self.monitor.log,
        )
        deadline = time.monotonic() + 60
        while True:
            statements = [
                f"ALTER SYSTEM SET {name} = {value}" for name, value in FAST_DETECTION.items()
            ]
            done = self._sql(self.monitor.port, [*statements, "SELECT pg_reload_conf()"])
            if done.returncode == 0:
                return
            if time.monotonic() > deadline or not self.monitor.running:
                raise RuntimeError(f"the monitor did not start: {self.monitor.log.read_text()}")
            time.sleep(0.5)

    def _create(self, node: Node) -> None:
        self._autoctl(
            [
                *("create", "postgres", "--pgdata", str(node.pgdata), "--pgport", str(node.port)),
                *("--hostname", "127.0.0.1", "--listen", "127.0.0.1", "--name", node.name),
                *("--auth", "trust", "--no-ssl", "--monitor", self.monitor_url),
            ],
            timeout=120,
        )
        for setting, value in KEEPER_SETTINGS.items():
            self._autoctl(["config", "set", "--pgdata", str(node.pgdata), setting, value])

    def start(self, node: Node) -> None:
        """Run the node's keeper (again): a node that was down rejoins as a secondary."""
        node.keeper = self._spawn(["run", "--pgdata", str(node.pgdata)], node.log)

    def kill(self, node: Node) -> None:
        """SIGKILL the node's keeper and its PostgreSQL together, as a lost host would die."""
        if node.keeper is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.keeper.pid, signal.SIGKILL)
            node.keeper.wait()

    def uri(self) -> str:
        """The services' URL, as `pg_autoctl show uri` prints it."""
        shown = self._autoctl(
            ["show", "uri", "--formation", "default", "--monitor", self.monitor_url]
        )
        return shown.strip()

    def states(self) -> dict[str, dict[str, Any]]:
        """Each node's row in the monitor, by name (reported and assigned states, health)."""
        shown = self._autoctl(["show", "state", "--json", "--monitor", self.monitor_url])
        return {row["nodename"]: row for row in json.loads(shown)}

    def role_of(self, role: str) -> Node:
        """The node whose reported state is `role` ("primary", "secondary") now."""
        states = self.states()
        for node in self.nodes:
            if states.get(node.name, {}).get("current_group_state") == role:
                return node
        raise RuntimeError(f"no node is {role}: {states}")

    def perform_failover(self) -> None:
        """A controlled failover (`pg_autoctl perform failover`), returning once it is done."""
        self._autoctl(["perform", "failover", "--monitor", self.monitor_url], timeout=120)

    def wait_for(self, wanted: Mapping[str, tuple[str, ...]], seconds: float) -> None:
        """Until each named node reports and is assigned one of its wanted states."""
        deadline = time.monotonic() + seconds
        while True:
            states = self.states()
            if all(
                states.get(name, {}).get("current_group_state") in accepted
                and states[name]["assigned_group_state"] == states[name]["current_group_state"]
                for name, accepted in wanted.items()
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the formation did not reach {wanted}: {states}")
            time.sleep(0.25)

    def wait_until_stable(self, seconds: float) -> None:
        """Until one node is primary and the other a secondary."""
        names = {node.name: ("primary", "secondary") for node in self.nodes}
        self.wait_for(names, seconds)
        roles = [row["current_group_state"] for row in self.states().values()]
        if sorted(roles) != ["primary", "secondary"]:
            raise RuntimeError(f"the formation is not one primary and one secondary: {roles}")

    def close(self) -> None:
        """Stop every process of the formation (its data goes with the directory).

        Each node's whole process group: a PostgreSQL whose keeper died goes too.
        """
        for node in [*self.nodes, self.monitor]:
            if node.keeper is None:
                continue
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(node.keeper.pid, signal.SIGTERM)
                node.keeper.wait(timeout=20)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.keeper.pid, signal.SIGKILL)
            node.keeper.wait()

    def _spawn(self, arguments: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as output:
            return subprocess.Popen(
                ["pg_autoctl", *arguments],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self._env,
                user=self.user,
                start_new_session=True,  # its own process group, so that kill() takes all
            )

    def _autoctl(self, arguments: list[str], timeout: float = 30) -> str:
        done = subprocess.run(
            ["pg_autoctl", *arguments],
            capture_output=True,
            env=self._env,
            user=self.user,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_autoctl {' '.join(arguments[:2])}: {done.stderr.decode()}")
        return done.stdout.decode()

    def _sql(self, port: int, statements: list[str]) -> subprocess.CompletedProcess[bytes]:
        """Run each statement on its own (ALTER SYSTEM refuses a transaction) with psql."""
        commands = [part for statement in statements for part in ("-c", statement)]
        return subprocess.run(
            [
                *(str(self.bin / "psql"), "-X", "-q", "-h", "127.0.0.1", "-p", str(port)),
                *("-U", "postgres", "-d", "pg_auto_failover", "-v", "ON_ERROR_STOP=1", *commands),
            ],
            capture_output=True,
            env=self._env,
            check=False,
            timeout=30,
        )
