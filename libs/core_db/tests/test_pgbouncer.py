"""Schema-per-tenant behind PgBouncer in transaction pooling mode: no cross-tenant read.

PgBouncer gives each transaction whichever server connection is free, so state a session
left on a connection (``search_path``, prepared statements) would reach other tenants'
transactions. Tenant routing is compiled into each statement (``schema_translate_map``),
so isolation must hold with 200 units of work from 25 client connections sharing 2 server
connections. psycopg's server-side prepared statements must be off there
(``prepare_threshold=None``), and migrations never go through the pooler: they hold
session-level advisory locks, which a transaction pooler does not keep. The
``statement_timeout`` db_kit sends in the ``options`` startup parameter does not reach the
server either (PgBouncer is told to ignore ``options``, else it refuses the connection).

PgBouncer is Debian's package: installed here when missing (as root), else the module skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql
from sqlalchemy import event, select, text
from sqlalchemy.engine import URL

import core_db
from auth.tables import AuthUserTable
from core_db import CoreSettings
from core_db.config import REGISTRY
from db_kit.database import SQLAlchemyDatabase
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.schema_tenants import SchemaTenantMigrator
from db_shared import DuplicateEntryError
from db_shared.errors import InvalidDataError
from db_shared.tenancy import tenant_context
from db_tools.embedded import SYSTEM_USER
from db_tools.testing import PostgresServer, debian_program
from db_tools.testing import run_sql as sql

pytestmark = pytest.mark.slow

SERVER_CONNECTIONS = 2  # PgBouncer's default_pool_size: every client shares these
CLIENT_CONNECTIONS = 25  # the SQLAlchemy pool's size in front of PgBouncer
UNITS_OF_WORK = 200
TENANTS = ("acme", "globex")
INSTALL_TIMEOUT = 240  # seconds for apt-get update + install on a fresh machine


# PgBouncer -------------------------------------------------------------------------------


def _pgbouncer_binary() -> str:
    """PgBouncer's path, installing Debian's package as root; skips the module otherwise."""
    return debian_program("pgbouncer", "pgbouncer", "/usr/sbin/pgbouncer", timeout=INSTALL_TIMEOUT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> tuple[dict[str, Any], pwd.struct_passwd | None]:
    """Popen arguments running PgBouncer unprivileged: it refuses to run as root."""
    if os.geteuid() != 0:
        return {}, None
    try:
        account = pwd.getpwnam(SYSTEM_USER)
    except KeyError:  # the server came from TEST_DATABASE_URL: no embedded user yet
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        account = pwd.getpwnam(SYSTEM_USER)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}, account


def _watchdog(owner: int, pgbouncer: int, folder: Path) -> None:
    """Stop PgBouncer when the pytest process ends, however it ends.

    It checks the process is still this PgBouncer (its ini file) so that a reused pid is
    never signalled, and ends by itself once PgBouncer has stopped.
    """
    ours = f"grep -qaF '{folder}/pgbouncer.ini' /proc/{pgbouncer}/cmdline 2>/dev/null"
    script = (
        f"while kill -0 {owner} 2>/dev/null; do {ours} || exit 0; sleep 1; done; "
        f"{ours} && kill -TERM {pgbouncer}; sleep 2; {ours} && kill -KILL {pgbouncer}; "
        f"rm -rf '{folder}'"
    )
    subprocess.Popen(
        ["/bin/sh", "-c", script],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@dataclass
class PgBouncer:
    """A throwaway PgBouncer (transaction pooling) in front of the test server."""

    process: subprocess.Popen[bytes]
    port: int
    folder: Path
    user: str

    def url(self, direct: URL) -> URL:
        """``direct`` (a database on the test server) reached through PgBouncer."""
        return direct.set(host="127.0.0.1", port=self.port)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.folder / "pgbouncer.log").read_text().splitlines()[-20:])
        return ""

    def admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The admin console (``SHOW POOLS``...): simple query protocol only."""
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="pgbouncer",
            autocommit=True, connect_timeout=5, cursor_factory=psycopg.ClientCursor,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # immediate shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_pgbouncer(binary: str, server: URL) -> PgBouncer:
    folder = Path(tempfile.mkdtemp(prefix="db_kit_test_pgbouncer_"))
    port = _free_port()
    user = server.username or "postgres"
    (folder / "pgbouncer.ini").write_text(
        textwrap.dedent(
            f"""\
            [databases]
            * = host={server.host or "127.0.0.1"} port={server.port or 5432}

            [pgbouncer]
            listen_addr = 127.0.0.1
            listen_port = {port}
            unix_socket_dir =
            auth_type = trust
            auth_file = {folder / "userlist.txt"}
            admin_users = {user}
            stats_users = {user}
            pool_mode = transaction
            default_pool_size = {SERVER_CONNECTIONS}
            min_pool_size = 0
            reserve_pool_size = 0
            max_client_conn = 200
            ignore_startup_parameters = extra_float_digits,options,application_name
            server_lifetime = 3600
            pidfile = {folder / "pgbouncer.pid"}
            """
        )
    )
    password = (server.password or "").replace('"', '""')
    (folder / "userlist.txt").write_text(f'"{user}" "{password}"\n')
    run_as, account = _run_as()
    if account is not None:
        for path in [folder, *folder.iterdir()]:
            os.chown(path, account.pw_uid, account.pw_gid)
    with open(folder / "pgbouncer.log", "wb") as log:
        process = subprocess.Popen(
            [binary, str(folder / "pgbouncer.ini")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **run_as,
        )
    _watchdog(os.getpid(), process.pid, folder)
    bouncer = PgBouncer(process, port, folder, user)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log_tail = bouncer.log()
            bouncer.stop()
            raise RuntimeError(f"pgbouncer exited with {process.returncode}:\n{log_tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return bouncer
        time.sleep(0.05)
    log_tail = bouncer.log()
    bouncer.stop()
    raise RuntimeError(f"pgbouncer did not listen on 127.0.0.1:{port} within 30 s:\n{log_tail}")


@pytest.fixture(scope="module")
def pgbouncer(postgres_server: PostgresServer) -> Iterator[PgBouncer]:
    bouncer = start_pgbouncer(_pgbouncer_binary(), postgres_server.admin_url)
    try:
        yield bouncer
    finally:
        bouncer.stop()


# databases -------------------------------------------------------------------------------


@pytest.fixture
def tenant_db(fresh_database: Callable[..., URL], monkeypatch: pytest.MonkeyPatch) -> Iterator[URL]:
    """A core database with tenants acme and globex, provisioned directly (never via PgBouncer).

    Each schema, ``public`` included, holds one user with id 1 and an email naming its
    schema, so a read routed to the wrong schema shows.
    """
    url = fresh_database("pgbouncer")
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    core_db.CONFIG.reset()
    Migrator(REGISTRY, url).upgrade()
    Migrator(core_db.CONFIG, url).upgrade()
    tenants = SchemaTenantMigrator(core_db.CONFIG, url)
    for slug in TENANTS:
        tenants.create(slug)
    for schema, label in [*((f"tenant_{s}", s) for s in TENANTS), ("public", "public")]:
        sql(url, f"INSERT INTO {schema}.auth_users (email) VALUES ('owner@{label}.example')")
    yield url
    core_db.CONFIG.reset()


def _no_server_side_prepare(
    dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]
) -> None:
    cparams["prepare_threshold"] = None


def behind_pgbouncer(url: URL, **settings: Any) -> SQLAlchemyDatabase:
    """A tenant-routed core database whose connections go through PgBouncer.

    The intended API is a setting, ``CORE_DB_PGBOUNCER=true`` (``prepare_threshold=None``
    in ``db_kit.engine.connect_args``); until db_kit has it, the same connect argument is
    added where psycopg connects, on both engines.
    """
    if "pgbouncer" in CoreSettings.model_fields:
        settings["pgbouncer"] = True
    db = SQLAlchemyDatabase(
        core_db.CONFIG, settings=CoreSettings(**settings), url=url, multi_tenant=True
    )
    if "pgbouncer" not in CoreSettings.model_fields:
        for engine in (db.engines.sync_engine, db.engines.async_engine.sync_engine):
            event.listen(engine, "do_connect", _no_server_side_prepare)
    return db


def counts(url: URL) -> dict[str, int]:
    return {
        schema: sql(url, f"SELECT count(*) FROM {schema}.auth_users")[0][0]
        for schema in (*(f"tenant_{s}" for s in TENANTS), "public")
    }


@dataclass
class Sampler:
    """Watches both sides of PgBouncer while a test runs, from another thread."""

    pgbouncer: PgBouncer
    server: PostgresServer
    database: str
    clients: list[int] = field(default_factory=list)
    servers: list[int] = field(default_factory=list)
    backends: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        u = self.server.admin_url
        with (
            self.pgbouncer.admin() as admin,
            psycopg.connect(
                host=u.host, port=u.port, user=u.username, password=u.password,
                dbname="postgres", autocommit=True,
            ) as direct,
        ):  # fmt: skip
            while not self._stop.is_set():
                with admin.cursor() as cur:
                    cur.execute("SHOW POOLS")
                    names = [c.name for c in cur.description or ()]
                    for row in cur.fetchall():
                        values = dict(zip(names, row, strict=True))
                        if values["database"] == self.database:
                            self.clients.append(values["cl_active"] + values["cl_waiting"])
                            self.servers.append(
                                sum(v for k, v in values.items() if k.startswith("sv_"))
                            )
                found = direct.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = %s AND backend_type = 'client backend'",
                    (self.database,),
                ).fetchone()
                self.backends.append(int(found[0]) if found else 0)
                time.sleep(0.005)

    @contextlib.contextmanager
    def running(self) -> Iterator[Sampler]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=10)


# tests -----------------------------------------------------------------------------------


def test_connections_through_pgbouncer_prepare_no_statements(
    tenant_db: URL, pgbouncer: PgBouncer
) -> None:
    db = behind_pgbouncer(pgbouncer.url(tenant_db))
    with db.engines.sync_engine.connect() as conn:
        assert conn.connection.driver_connection.prepare_threshold is None  # type: ignore[union-attr]

    async def async_threshold() -> object:
        async with db.engines.async_engine.connect() as conn:
            raw = await conn.get_raw_connection()
            threshold = raw.driver_connection.prepare_threshold  # type: ignore[union-attr]
        await db.dispose()
        return threshold

    assert asyncio.run(async_threshold()) is None
    db.dispose_sync()


def test_interleaved_units_of_work_on_shared_server_connections_never_cross(
    tenant_db: URL, pgbouncer: PgBouncer, postgres_server: PostgresServer
) -> None:
    db = behind_pgbouncer(
        pgbouncer.url(tenant_db),
        pool_size=CLIENT_CONNECTIONS,
        max_overflow=0,
        pool_timeout=60,
    )
    User = db.model(AuthUserTable)
    backend_pids: set[int] = set()
    sampler = Sampler(pgbouncer, postgres_server, tenant_db.database or "")

    async def unit(i: int) -> None:
        slug = TENANTS[i % 2]
        async with tenant_context(slug):
            await asyncio.sleep(0.0005 * (i % 4))
            async with db.session() as s:
                owner = await s.get(User, 1)  # the same primary key in every schema
                assert owner is not None
                assert owner.email == f"owner@{slug}.example", (i, slug, owner.email)
                s.add(User(email=f"u{i}@{slug}.example"))
                await s.flush()
                # Hold the transaction (and its server connection) while others queue.
                await asyncio.sleep(0.001 * (i % 3))
                emails = list(await s.scalars(select(User.email)))
                assert f"u{i}@{slug}.example" in emails, (i, slug)
                assert all(e.endswith(f"@{slug}.example") for e in emails), (i, slug, emails)
                backend_pids.add(await s.scalar(text("SELECT pg_backend_pid()")))
            async with db.session() as s:  # a new transaction: any free server connection
                found = await s.scalar(select(User.email).where(User.id == 1))
                assert found == f"owner@{slug}.example", (i, slug, found)
                path = await s.scalar(text("SELECT current_schemas(false)"))
                assert "tenant_" not in str(path)  # nothing left on the server connection

    async def scenario() -> int:
        pool = db.engines.async_engine.pool
        most = 0

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, pool.checkedout())  # type: ignore[attr-defined]
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.gather(*(unit(i) for i in range(UNITS_OF_WORK)))
        finally:
            watcher.cancel()
            await db.dispose()
        return most

    with sampler.running():
        most_checked_out = asyncio.run(scenario())

    half = UNITS_OF_WORK // 2
    assert counts(tenant_db) == {"tenant_acme": 1 + half, "tenant_globex": 1 + half, "public": 1}
    # PgBouncer really multiplexed: many clients at once, never more than 2 server sessions.
    assert most_checked_out > SERVER_CONNECTIONS, most_checked_out
    assert sampler.clients, "SHOW POOLS never listed the test database"
    assert max(sampler.clients) > SERVER_CONNECTIONS, sampler.clients
    assert max(sampler.servers) <= SERVER_CONNECTIONS, sampler.servers
    assert max(sampler.backends) <= SERVER_CONNECTIONS, sampler.backends
    assert 1 <= len(backend_pids) <= SERVER_CONNECTIONS, backend_pids


def test_one_client_connection_alternating_tenants_even_after_errors(
    tenant_db: URL, pgbouncer: PgBouncer
) -> None:
    db = behind_pgbouncer(pgbouncer.url(tenant_db), pool_size=1, max_overflow=0)
    User = db.model(AuthUserTable)

    def owner_only(slug: str, emails: list[str]) -> None:
        assert emails == [f"owner@{slug}.example"], (slug, emails)

    def fail_after_a_write(slug: str, how: str) -> None:
        with db.sync_session() as s:
            s.add(User(email=f"{how}@{slug}.example"))
            s.flush()
            if how == "sql":
                s.execute(text("SELECT 1 / 0"))
            raise RuntimeError("the unit of work fails after a write")

    async def fail_after_a_write_async(slug: str) -> None:
        async with db.session() as s:
            s.add(User(email=f"rolled-back@{slug}.example"))
            await s.flush()
            await s.execute(text("SELECT 1 / 0"))

    for round_ in range(10):
        for slug in TENANTS:
            with tenant_context(slug):
                if round_ % 3 == 0:
                    with pytest.raises(DuplicateEntryError), db.sync_session() as s:
                        s.add(User(email=f"owner@{slug}.example"))
                elif round_ % 3 == 1:
                    with pytest.raises(InvalidDataError):
                        fail_after_a_write(slug, "sql")
                else:
                    with pytest.raises(RuntimeError):
                        fail_after_a_write(slug, "python")
                with db.sync_session() as s:
                    owner_only(slug, list(s.scalars(select(User.email))))
                    path = s.execute(text("SELECT current_schemas(false)")).scalar_one()
                    assert "tenant_" not in str(path)
    assert db.engines.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    db.dispose_sync()

    async def scenario() -> None:
        for round_ in range(10):
            for slug in TENANTS:
                async with tenant_context(slug):
                    if round_ % 2 == 0:
                        with pytest.raises(DuplicateEntryError):
                            async with db.session() as s:
                                s.add(User(email=f"owner@{slug}.example"))
                    else:
                        with pytest.raises(InvalidDataError):
                            await fail_after_a_write_async(slug)
                    async with db.session() as s:
                        owner_only(slug, list(await s.scalars(select(User.email))))
        assert db.engines.async_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        await db.dispose()

    asyncio.run(scenario())
    assert counts(tenant_db) == {"tenant_acme": 1, "tenant_globex": 1, "public": 1}


def test_server_side_prepared_statements_would_break_on_a_transaction_pooler(
    tenant_db: URL, pgbouncer: PgBouncer
) -> None:
    """Why ``prepare_threshold=None`` matters: psycopg's default prepares after 5 runs."""
    target = pgbouncer.url(tenant_db)
    clients = [
        psycopg.connect(
            host=target.host,
            port=target.port,
            user=target.username,
            dbname=target.database,
            autocommit=True,
        )
        for _ in range(2)
    ]
    failure: psycopg.Error | None = None
    try:
        query = pgsql.SQL("SELECT email FROM {} WHERE id = %s").format(
            pgsql.Identifier("tenant_acme", "auth_users")
        )
        for _ in range(20):
            for conn in clients:
                try:
                    conn.execute(query, (1,))
                except psycopg.Error as exc:
                    failure = exc
                    break
            if failure:
                break
    finally:
        for conn in clients:
            conn.close()
    if failure is None:
        pytest.skip("this PgBouncer tracks protocol-level prepared statements (1.21+)")
    assert failure.sqlstate in {"26000", "42P05", "08P01"}, failure
