"""Test infrastructure for losing a primary: a Patroni pair with one etcd and HAProxy.

Everything comes from Debian packages (``patroni``, ``etcd-server``, ``haproxy``), installed
on demand by ``db_tools.testing.debian_program`` (the test is skipped, with the reason, where
they cannot be installed); PostgreSQL itself is the embedded wheel's (``bin_dir()``), run by
Patroni as the unprivileged system user when we are root. Everything listens on 127.0.0.1
on free ports, under one temporary folder:

* one etcd (v3 API), the DCS;
* two Patroni nodes, ``node1`` and ``node2``; whichever holds the leader key is the primary;
* HAProxy with a primary port that sends connections to the node whose Patroni REST API
  answers 200 on ``/primary`` (checked every 250 ms, up after 3 good checks, down after 1
  bad one; sessions to a node marked down are cut).

Timeouts are short so a test stays quick: ``ttl`` 10 s, ``loop_wait`` 1 s,
``retry_timeout`` 4 s (Patroni wants ``loop_wait + 2 * retry_timeout <= ttl``).

In a test module::

    pytest_plugins = ["db_tools.patroni_testing"]

    def test_something(patroni_cluster: PatroniCluster) -> None: ...

``patroni_cluster`` starts the cluster (``synchronous_mode: true``) once per module and
stops it at the end; a watchdog kills every process of it and deletes its folder if the
test process dies.

PYTEST_DONT_REWRITE: test modules import this module before ``pytest_plugins`` registers
it, too late for assertion rewriting (pytest would warn); it asserts nothing of interest.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest
from sqlalchemy.engine import URL

from db_kit.settings import DRIVER
from db_shared.errors import ConfigurationError
from db_tools.embedded import bin_dir, system_user
from db_tools.fleet_testing import _as_root, _prepare_binaries
from db_tools.testing import PostgresServer, debian_program, unused_port
from db_tools.watchdog import after_exit

__all__ = [
    "HOST",
    "PatroniCluster",
    "PatroniNode",
    "Programs",
    "patroni_cluster",
    "patroni_programs",
]

HOST = "127.0.0.1"
SUPERUSER = "postgres"
TTL = 10
LOOP_WAIT = 1
RETRY_TIMEOUT = 4
START_TIMEOUT = 60.0  # seconds for a leader, a replica, a healthy pair
# Patroni (3.0.2 here) answers 200 on /primary as soon as a node holds the leader key, before
# its PostgreSQL has left recovery: with ``rise 1`` HAProxy sent a few connections to a node
# still promoting (writes failed with 25006 read_only_sql_transaction, 1 run in 9). Three
# good checks in a row (~0.5-0.75 s) leave promotion time to finish.
HAPROXY_RISE = 3


@dataclass(frozen=True)
class Programs:
    """Where the Debian packages' programs are."""

    patroni: str
    etcd: str
    haproxy: str


def find_programs() -> Programs:
    """Install (as root) or find patroni, etcd and haproxy; skips the test when it cannot.

    Call it before starting anything: installing takes tens of seconds."""
    return Programs(
        patroni=debian_program("patroni", "patroni"),
        etcd=debian_program("etcd-server", "etcd"),
        haproxy=debian_program("haproxy", "haproxy", "/usr/sbin/haproxy"),
    )


def _user_kwargs() -> dict[str, Any]:
    """subprocess arguments running a program as the system user when we are root."""
    if not _as_root():
        return {}
    user = system_user()
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _own(path: Path) -> None:
    if _as_root():
        user = system_user()
        os.chown(path, user.pw_uid, user.pw_gid)


def _http(
    method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 2.0
) -> tuple[int, Any]:
    """(status, parsed JSON body or text) of one request to a REST API; (0, reason) when
    nothing answered."""
    data = None if body is None else json.dumps(body).encode()
    # Only ever http://127.0.0.1:PORT/... (Patroni's and etcd's REST APIs).
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (OSError, TimeoutError) as exc:
        return 0, str(exc)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def _children(pid: int) -> list[int]:
    """Direct children of process ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # "pid (comm) state ppid ...": comm may hold spaces, so split after the ')'.
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class PatroniNode:
    """One Patroni-managed PostgreSQL server: its ports, folder and process."""

    name: str
    data_dir: Path
    pg_port: int
    rest_port: int
    process: subprocess.Popen[bytes] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "patroni.yml"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "patroni.log"

    @property
    def rest_url(self) -> str:
        return f"http://{HOST}:{self.rest_port}"

    def rest(self, path: str, timeout: float = 2.0) -> tuple[int, Any]:
        """GET ``path`` on this node's Patroni REST API."""
        return _http("GET", self.rest_url + path, timeout=timeout)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, 0)
            return pid
        return None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class PatroniCluster:
    """etcd, two Patroni nodes and HAProxy in one temporary folder; ``close()`` stops them
    (a watchdog does it if the process that started them dies)."""

    def __init__(
        self,
        programs: Programs,
        *,
        synchronous_mode: bool = True,
        node_names: Sequence[str] = ("node1", "node2"),
    ) -> None:
        self.programs = programs
        self.synchronous_mode = synchronous_mode
        # Not under pytest's basetemp: a concurrent pytest run prunes old basetemps.
        self.root = Path(tempfile.mkdtemp(prefix="db_kit_patroni_")).resolve()
        self.scope = f"pgha_{uuid.uuid4().hex[:8]}"
        self.password = uuid.uuid4().hex
        self.replication_password = uuid.uuid4().hex
        self.etcd_port = unused_port()
        self.etcd_peer_port = unused_port()
        self.haproxy_port = unused_port()
        self.nodes = [
            PatroniNode(name, self.root / name, unused_port(), unused_port()) for name in node_names
        ]
        self.etcd: subprocess.Popen[bytes] | None = None
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.timings: dict[str, float] = {}
        self._logs: list[IO[bytes]] = []
        self._databases: PostgresServer | None = None
        _prepare_binaries()
        if _as_root():
            self.root.chmod(0o755)
            _own(self.root)
        self._watchdog()

    # files and processes --------------------------------------------------------------

    @property
    def pids_file(self) -> Path:
        return self.root / "pids"

    def _watchdog(self) -> None:
        """When this process ends: SIGKILL every process we started (only while its command
        line still names our folder: a pid may be reused), then every postmaster left under
        the folder, and delete the folder."""
        root = self.root
        kill_ours = (
            f"for p in $(cat '{self.pids_file}' 2>/dev/null); do "
            f"grep -qs '{root}' /proc/$p/cmdline && kill -9 $p; done"
        )
        kill_postmasters = (
            f"for f in '{root}'/*/pgdata/postmaster.pid; do "
            f'p=$(head -1 "$f" 2>/dev/null); [ -n "$p" ] && '
            f"grep -qs '{root}' /proc/$p/cmdline && kill -9 $p; done"
        )
        after_exit(
            os.getpid(),
            f"{kill_ours}; {kill_postmasters}; sleep 1; rm -rf '{root}'",
        )

    def _spawn(self, name: str, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        out = open(log, "ab")  # noqa: SIM115 - closed by close()
        self._logs.append(out)
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            env={**os.environ, "HOME": str(self.root), "PYTHONUNBUFFERED": "1"},
            # Its own session: a ^C to the test's process group does not reach it.
            start_new_session=True,
            **_user_kwargs(),
        )
        with open(self.pids_file, "a") as pids:
            pids.write(f"{process.pid}\n")
        return process

    # configuration ---------------------------------------------------------------------

    def _patroni_config(self, node: PatroniNode) -> str:
        config = {
            "scope": self.scope,
            "name": node.name,
            "log": {"level": "INFO"},
            "restapi": {
                "listen": f"{HOST}:{node.rest_port}",
                "connect_address": f"{HOST}:{node.rest_port}",
            },
            "etcd3": {"hosts": f"{HOST}:{self.etcd_port}"},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL,
                    "loop_wait": LOOP_WAIT,
                    "retry_timeout": RETRY_TIMEOUT,
                    "maximum_lag_on_failover": 1048576,
                    "synchronous_mode": self.synchronous_mode,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "use_slots": True,
                        "parameters": {
                            "wal_level": "replica",
                            "hot_standby": "on",
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "wal_log_hints": "on",
                            "max_connections": 100,
                        },
                    },
                },
                "initdb": [
                    {"encoding": "UTF8"},
                    {"locale": "C"},
                    {"auth-local": "trust"},
                    {"auth-host": "scram-sha-256"},
                ],
            },
            "postgresql": {
                "listen": f"{HOST}:{node.pg_port}",
                "connect_address": f"{HOST}:{node.pg_port}",
                "data_dir": str(node.pgdata),
                "bin_dir": str(bin_dir()),
                "pgpass": str(node.data_dir / "pgpass"),
                "authentication": {
                    "superuser": {"username": SUPERUSER, "password": self.password},
                    "replication": {
                        "username": "replicator",
                        "password": self.replication_password,
                    },
                },
                "pg_hba": [
                    "local all all trust",
                    f"host replication replicator {HOST}/32 scram-sha-256",
                    f"host all all {HOST}/32 scram-sha-256",
                ],
                "parameters": {
                    "unix_socket_directories": str(node.data_dir),
                    "password_encryption": "scram-sha-256",
                    # Durability against a crash of the machine is not under test; against
                    # a crash of the server (SIGKILL) the OS still has every write.
                    "fsync": "off",
                    "shared_buffers": "32MB",
                    "wal_receiver_status_interval": "1s",
                },
                "basebackup": [{"checkpoint": "fast"}],
                "remove_data_directory_on_rewind_failure": True,
                "remove_data_directory_on_diverged_timelines": True,
            },
            "tags": {"nofailover": False, "noloadbalance": False},
        }
        return json.dumps(config, indent=2)  # JSON is YAML

    def _haproxy_config(self) -> str:
        servers = "\n".join(
            f"    server {n.name} {HOST}:{n.pg_port} check port {n.rest_port}" for n in self.nodes
        )
        return f"""global
    maxconn 200
defaults
    mode tcp
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 1s
listen primary
    bind {HOST}:{self.haproxy_port}
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 250ms fastinter 250ms downinter 250ms fall 1 rise {HAPROXY_RISE} on-marked-down shutdown-sessions
{servers}
"""

    # lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """etcd, then node1 (the leader: it bootstraps), then node2 (cloned from it), then
        HAProxy; returns once the pair is healthy."""
        began = time.perf_counter()
        self._start_etcd()
        first, *others = self.nodes
        self.start_node(first)
        self.wait_for(lambda: self.leader() is first, "a leader", START_TIMEOUT)
        self.timings["leader"] = time.perf_counter() - began
        replica_began = time.perf_counter()
        for node in others:
            self.start_node(node)
        self.wait_healthy()
        self.timings["replica"] = time.perf_counter() - replica_began
        self._start_haproxy()
        self.wait_for(self._haproxy_routes, "HAProxy to route to the leader", 10)
        self._databases = PostgresServer(self.haproxy_url(), "patroni cluster")
        self.timings["start"] = time.perf_counter() - began

    def _start_etcd(self) -> None:
        data = self.root / "etcd"
        data.mkdir()
        _own(data)
        data.chmod(0o700)
        client = f"http://{HOST}:{self.etcd_port}"
        peer = f"http://{HOST}:{self.etcd_peer_port}"
        self.etcd = self._spawn(
            "etcd",
            [
                self.programs.etcd, "--name", "etcd1", "--data-dir", str(data),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"etcd1={peer}", "--initial-cluster-state", "new",
                "--initial-cluster-token", self.scope,
            ],
            self.root / "etcd.log",
        )  # fmt: skip
        self.wait_for(lambda: _http("GET", client + "/health")[0] == 200, "etcd to answer", 30)

    def start_node(self, node: PatroniNode) -> None:
        """Start (or restart) ``node``'s Patroni; it starts PostgreSQL itself."""
        if not node.data_dir.exists():
            node.data_dir.mkdir()
            _own(node.data_dir)
        node.config_file.write_text(self._patroni_config(node))
        node.config_file.chmod(0o600)
        _own(node.config_file)
        node.process = self._spawn(
            node.name, [self.programs.patroni, str(node.config_file)], node.logfile
        )

    def _start_haproxy(self) -> None:
        config = self.root / "haproxy.cfg"
        config.write_text(self._haproxy_config())
        config.chmod(0o644)
        self.haproxy = self._spawn(
            "haproxy", [self.programs.haproxy, "-db", "-f", str(config)], self.root / "haproxy.log"
        )

    def _haproxy_routes(self) -> bool:
        leader = self.leader()
        if leader is None or self.haproxy is None or self.haproxy.poll() is not None:
            return False
        # HAProxy counts a server up until its first check fails, and balances round-robin:
        # four connections in a row reaching the leader mean the replica is out.
        for _ in range(4):
            try:
                with psycopg.connect(self.conninfo(self.haproxy_port), connect_timeout=2) as conn:
                    row = conn.execute("SELECT inet_server_port()").fetchone()
            except psycopg.Error:
                return False
            if row is None or row[0] != leader.pg_port:
                return False
        return True

    def close(self) -> None:
        """Stop HAProxy, both nodes (Patroni stops its PostgreSQL) and etcd; delete the
        folder."""
        if self._databases is not None and self.leader() is not None:
            with contextlib.suppress(psycopg.Error):
                self._databases.drop_all()
        if self.haproxy is not None:
            _kill(self.haproxy.pid)
        for node in self.nodes:
            if node.is_running() and node.process is not None:
                node.process.terminate()  # Patroni stops PostgreSQL (fast) before exiting
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    _kill(node.process.pid)
            postmaster = node.postmaster_pid()
            if postmaster is not None:
                _kill(postmaster)
        if self.etcd is not None:
            _kill(self.etcd.pid)
        for process in [self.haproxy, self.etcd, *(n.process for n in self.nodes)]:
            if process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
        for log in self._logs:
            log.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # state -----------------------------------------------------------------------------

    def members(self) -> list[dict[str, Any]]:
        """Patroni's ``/cluster`` view (name, role, state, lag, ...), from any node that
        answers; [] when none does."""
        for node in self.nodes:
            if node.is_running():
                status, body = node.rest("/cluster", timeout=1)
                if status == 200 and isinstance(body, dict):
                    members = body.get("members", [])
                    return members if isinstance(members, list) else []
        return []

    def node(self, name: str) -> PatroniNode:
        return next(n for n in self.nodes if n.name == name)

    def leader(self) -> PatroniNode | None:
        """The node holding the leader key whose PostgreSQL runs, or None."""
        for member in self.members():
            if member.get("role") == "leader" and member.get("state") == "running":
                return self.node(str(member["name"]))
        return None

    def replicas(self) -> list[PatroniNode]:
        leader = self.leader()
        return [n for n in self.nodes if n is not leader]

    def is_healthy(self) -> bool:
        """A leader, every other node streaming from it (in synchronous mode, one of them
        the synchronous standby) and every Patroni process alive."""
        if not all(n.is_running() for n in self.nodes):
            return False
        members = self.members()
        leaders = [m for m in members if m.get("role") == "leader" and m.get("state") == "running"]
        others = [m for m in members if m.get("role") != "leader"]
        if len(leaders) != 1 or len(members) != len(self.nodes):
            return False
        if not all(m.get("state") in ("streaming", "running") for m in others):
            return False
        if self.synchronous_mode and not any(m.get("role") == "sync_standby" for m in others):
            return False
        # The replicas have caught up (lag known and small).
        return all(isinstance(m.get("lag"), int) and m["lag"] < 1024 * 1024 for m in others)

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> float:
        """Wait until ``is_healthy()``; seconds waited."""
        return self.wait_for(self.is_healthy, "a healthy pair", timeout)

    def wait_for(self, condition: Any, what: str, timeout: float) -> float:
        began = time.perf_counter()
        while not condition():
            if time.perf_counter() - began > timeout:
                raise ConfigurationError(f"no {what} within {timeout:.0f} s\n{self.describe()}")
            time.sleep(0.1)
        return time.perf_counter() - began

    def describe(self) -> str:
        """Members and the tail of every log, for failure messages."""
        parts = [f"members: {self.members()}"]
        for node in self.nodes:
            parts.append(f"--- {node.name} (patroni) ---\n{node.log_tail()}")
        for name in ("etcd.log", "haproxy.log"):
            with contextlib.suppress(OSError):
                tail = (self.root / name).read_text(errors="replace").splitlines()[-10:]
                parts.append(f"--- {name} ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def set_synchronous_mode(self, on: bool, timeout: float = 30) -> None:
        """Turn Patroni's ``synchronous_mode`` on or off (``PATCH /config``, what
        ``patronictl edit-config`` does) and wait until the pair shows it: a synchronous
        standby designated, or none."""
        leader = self.leader()
        if leader is None:
            raise ConfigurationError(f"no leader to configure\n{self.describe()}")
        status, body = _http("PATCH", leader.rest_url + "/config", {"synchronous_mode": on})
        if status != 200:
            raise ConfigurationError(f"PATCH /config refused ({status}): {body}")
        self.synchronous_mode = on

        def shown() -> bool:
            has_sync = any(m.get("role") == "sync_standby" for m in self.members())
            return has_sync == on and self.is_healthy()

        self.wait_for(shown, f"synchronous_mode {'on' if on else 'off'}", timeout)

    # disruptions -----------------------------------------------------------------------

    def switchover(self, candidate: PatroniNode | None = None) -> PatroniNode:
        """A planned switchover (``POST /switchover`` on the leader's REST API, what
        ``patronictl switchover --force`` does); returns the candidate. Returns as soon as
        Patroni accepted it; use ``wait_for_leader`` for the new leader."""
        leader = self.leader()
        if leader is None:
            raise ConfigurationError(f"no leader to switch over from\n{self.describe()}")
        if candidate is None:
            candidate = next(n for n in self.nodes if n is not leader)
        status, body = _http(
            "POST",
            leader.rest_url + "/switchover",
            {"leader": leader.name, "candidate": candidate.name},
            timeout=30,
        )
        if status != 200:
            raise ConfigurationError(f"switchover refused ({status}): {body}\n{self.describe()}")
        return candidate

    def kill_node(self, node: PatroniNode) -> None:
        """Lose ``node`` as a machine is lost: SIGKILL its Patroni (so nothing restarts
        PostgreSQL), then its postmaster and the postmaster's children. The leader key
        stays in etcd until its TTL runs out; then the other node takes over."""
        postmaster = node.postmaster_pid()
        if node.process is not None:
            _kill(node.process.pid)
            node.process.wait(timeout=10)
        if postmaster is not None:
            children = _children(postmaster)
            _kill(postmaster)
            for child in children:
                _kill(child)

    def wait_for_leader(self, node: PatroniNode, timeout: float = 40) -> float:
        """Wait until ``node`` is the leader and accepts writes; seconds waited."""
        return self.wait_for(lambda: self.leader() is node, f"{node.name} leading", timeout)

    # URLs ------------------------------------------------------------------------------

    def conninfo(self, port: int, database: str = "postgres") -> str:
        return (
            f"host={HOST} port={port} user={SUPERUSER} password={self.password} dbname={database}"
        )

    def haproxy_url(self, database: str = "postgres") -> URL:
        """The superuser's URL through HAProxy's primary port."""
        return URL.create(
            DRIVER,
            username=SUPERUSER,
            password=self.password,
            host=HOST,
            port=self.haproxy_port,
            database=database,
        )

    def multi_host_url(self, database: str = "postgres", connect_timeout: int = 2) -> URL:
        """A libpq multi-host URL over both nodes with ``target_session_attrs=read-write``."""
        return URL.create(
            DRIVER,
            username=SUPERUSER,
            password=self.password,
            database=database,
            query={
                "host": tuple(f"{HOST}:{n.pg_port}" for n in self.nodes),
                "target_session_attrs": "read-write",
                "connect_timeout": str(connect_timeout),
            },
        )

    def multi_host_conninfo(self, database: str = "postgres", connect_timeout: int = 2) -> str:
        """The libpq (psycopg) form of ``multi_host_url``."""
        hosts = ",".join(HOST for _ in self.nodes)
        ports = ",".join(str(n.pg_port) for n in self.nodes)
        return (
            f"host={hosts} port={ports} user={SUPERUSER} password={self.password} "
            f"dbname={database} target_session_attrs=read-write "
            f"connect_timeout={connect_timeout}"
        )

    def create_database(self, prefix: str = "t") -> URL:
        """A new database on the leader (dropped at ``close()``); its URL through HAProxy."""
        if self._databases is None:
            raise ConfigurationError("start the cluster first")
        return self._databases.create_database(prefix)

    def connect_leader(self, database: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
        leader = self.leader()
        if leader is None:
            raise ConfigurationError(f"no leader\n{self.describe()}")
        return psycopg.connect(
            self.conninfo(leader.pg_port, database), autocommit=True, connect_timeout=3
        )


@contextlib.contextmanager
def running_cluster(
    programs: Programs, *, synchronous_mode: bool = True
) -> Iterator[PatroniCluster]:
    """A started Patroni pair with etcd and HAProxy, stopped and deleted on exit."""
    cluster = PatroniCluster(programs, synchronous_mode=synchronous_mode)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


# --- pytest fixtures (``pytest_plugins = ["db_tools.patroni_testing"]``) -----------------


@pytest.fixture(scope="session")
def patroni_programs() -> Programs:
    """patroni, etcd and haproxy, installed before any server starts (or the test skips)."""
    return find_programs()


@pytest.fixture(scope="module")
def patroni_cluster(patroni_programs: Programs) -> Iterator[PatroniCluster]:
    """The module's Patroni pair (``synchronous_mode: true``), etcd and HAProxy."""
    with running_cluster(patroni_programs, synchronous_mode=True) as cluster:
        yield cluster
