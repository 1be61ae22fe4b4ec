"""Schema-per-tenant across two servers, each behind its own PgBouncer (transaction pooling).

The single-server suite (``test_pgbouncer.py``) again, on a fleet (``db_tools.fleet_testing``:
pg1, the home server holding the registry, and pg2): ``<PREFIX>SERVERS`` names each server
by its PgBouncer's URL, ``pgbouncer=True``. Tenants on both servers hold a user with the
same primary key, so a read routed to the wrong schema or the wrong server shows (the
email names the tenant and its server; ``inet_server_port()`` names the server that
answered, through the pooler). The registry's LISTEN cannot go through a transaction
pooler: ``registry_listen_url`` is the home server's direct URL. Migrations and
provisioning never go through PgBouncer (session-level advisory locks).

PgBouncer is started with ``start_pgbouncer`` from ``test_pgbouncer.py`` (loaded by path:
test modules are not importable packages under ``--import-mode=importlib``), one in front
of each server, each stopped after its test and by a watchdog if pytest dies.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import URL

import core_db
from auth.tables import AuthUserTable
from core_db.config import REGISTRY
from core_db.settings import CoreSettings
from db_kit.database import SQLAlchemyDatabase
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.schema_tenants import SchemaTenantMigrator
from db_shared import DatabaseUnavailableError
from db_shared.tenancy import tenant_context
from db_tools.fleet_testing import PostgresFleet

pytest_plugins = ["db_tools.fleet_testing"]
pytestmark = pytest.mark.slow


def _single_server_suite() -> ModuleType:
    """``test_pgbouncer.py`` (its PgBouncer helpers), loaded once by path."""
    name = "core_db_tests_pgbouncer_helpers"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("test_pgbouncer.py")
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return module


_suite = _single_server_suite()
start_pgbouncer = _suite.start_pgbouncer
PgBouncer = _suite.PgBouncer
Sampler = _suite.Sampler
SERVER_CONNECTIONS: int = _suite.SERVER_CONNECTIONS  # each PgBouncer's default_pool_size

CLIENT_CONNECTIONS = 24  # the SQLAlchemy pool, divided across the two servers: 12 each
UNITS_OF_WORK = 400
# slug -> server (None: left unplaced, which means the home server)
PLACEMENT: dict[str, str | None] = {"acme": "pg1", "globex": None, "initech": "pg2", "hooli": "pg2"}


def _where(slug: str) -> str:
    return PLACEMENT[slug] or "pg1"


def _sql(url: URL, statement: str, **params: object) -> Any:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return result.all() if result.returns_rows else None
    finally:
        engine.dispose()


def _place(home: URL, slug: str, server: str | None, schema_made_on: URL) -> None:
    """Provision ``slug``'s schema on its server (directly), and register it on the home
    server (as ``test_fleet_routing`` does)."""
    SchemaTenantMigrator(core_db.CONFIG, schema_made_on).create(slug)
    if schema_made_on != home:
        _sql(schema_made_on, "DELETE FROM core.tenants WHERE slug = :s", s=slug)
        _sql(
            home,
            "INSERT INTO core.tenants (slug, name, schema_name, status, server, revision) "
            "VALUES (:s, :s, :schema, 'active', :server, :rev)",
            s=slug,
            schema=f"tenant_{slug}",
            server=server,
            rev=SchemaTenantMigrator(core_db.CONFIG, home).head(),
        )
    else:
        _sql(
            home, "UPDATE core.tenants SET server = :server WHERE slug = :s", s=slug, server=server
        )


@dataclass
class BouncedFleet:
    """The fleet's databases (direct URLs) and a PgBouncer in front of each server."""

    urls: dict[str, URL]
    ports: dict[str, int]
    bouncers: dict[str, Any]  # server name -> PgBouncer

    def database(self, **more: object) -> SQLAlchemyDatabase:
        servers = {
            name: {"primary": self.bouncers[name].url(url).render_as_string(hide_password=False)}
            for name, url in self.urls.items()
        }
        home = self.urls["pg1"]
        settings = CoreSettings(
            url=self.bouncers["pg1"].url(home).render_as_string(hide_password=False),
            servers=json.dumps(servers),
            environment="test",
            multi_tenant=True,
            pgbouncer=True,
            registry_listen_url=home.render_as_string(hide_password=False),
            **more,
        )
        return SQLAlchemyDatabase(core_db.CONFIG, settings=settings)

    def rows(self) -> dict[str, int]:
        return {
            slug: _sql(self.urls[_where(slug)], f"SELECT count(*) FROM tenant_{slug}.auth_users")[
                0
            ][0]
            for slug in PLACEMENT
        }


@pytest.fixture(scope="module")
def fleet_databases(pg_fleet: PostgresFleet) -> Iterator[dict[str, URL]]:
    """One database per server, migrated and provisioned directly (never via PgBouncer)."""
    urls = {name: pg_fleet[name].create_database("pgbouncer_fleet") for name in ("pg1", "pg2")}
    with pytest.MonkeyPatch.context() as patch:
        # The migrators read core_db's settings: the home server's primary.
        patch.setenv("DATABASE_URL", urls["pg1"].render_as_string(hide_password=False))
        core_db.CONFIG.reset()
        try:
            for url in urls.values():
                Migrator(REGISTRY, url).upgrade()
                Migrator(core_db.CONFIG, url).upgrade()
            for slug, server in PLACEMENT.items():
                _place(urls["pg1"], slug, server, urls[server or "pg1"])
                # The same primary key (the first identity value) in every tenant; the
                # email names tenant and server.
                made = _sql(
                    urls[_where(slug)],
                    f"INSERT INTO tenant_{slug}.auth_users (email) VALUES (:e) RETURNING id",
                    e=f"owner@{slug}.{_where(slug)}",
                )
                assert made == [(1,)], (slug, made)
            yield urls
        finally:
            core_db.CONFIG.reset()
    for name, url in urls.items():
        pg_fleet[name].drop_database(url)


@pytest.fixture
def fleet(fleet_databases: dict[str, URL], pg_fleet: PostgresFleet) -> Iterator[BouncedFleet]:
    """Fresh PgBouncers, one in front of pg1 and one in front of pg2, stopped afterwards."""
    binary = _suite._pgbouncer_binary()
    with ExitStack() as stack:
        bouncers = {}
        for name in fleet_databases:
            bouncer = start_pgbouncer(binary, pg_fleet[name].admin_url)
            stack.callback(bouncer.stop)
            bouncers[name] = bouncer
        yield BouncedFleet(
            fleet_databases, {name: pg_fleet[name].port for name in fleet_databases}, bouncers
        )


def _owner_query() -> Any:
    user = SQLAlchemyDatabase(core_db.CONFIG).model(AuthUserTable)
    return select(func.inet_server_port(), user.email).where(user.id == 1)


# tests -----------------------------------------------------------------------------------


def test_every_servers_connections_through_pgbouncer_prepare_no_statements(
    fleet: BouncedFleet,
) -> None:
    db = fleet.database()
    servers = db.fleet
    assert servers is not None
    assert servers.home == "pg1"
    for name in ("pg1", "pg2"):
        engines = servers.engines(name)
        assert engines.url.port == fleet.bouncers[name].port, name  # through its PgBouncer
        with engines.sync_engine.connect() as conn:
            assert conn.connection.driver_connection.prepare_threshold is None  # type: ignore[union-attr]
            # The server behind the bouncer is the one named.
            assert conn.scalar(text("SELECT inet_server_port()")) == fleet.ports[name]

    async def async_thresholds() -> list[object]:
        found = []
        try:
            for name in ("pg1", "pg2"):
                async with servers.engines(name).async_engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    found.append(raw.driver_connection.prepare_threshold)  # type: ignore[union-attr]
        finally:
            await db.dispose()
        return found

    assert asyncio.run(async_thresholds()) == [None, None]
    db.dispose_sync()


def test_concurrent_tenants_through_both_bouncers_never_cross(
    fleet: BouncedFleet, pg_fleet: PostgresFleet
) -> None:
    before = fleet.rows()
    db = fleet.database(pool_size=CLIENT_CONNECTIONS, max_overflow=0, pool_timeout=60)
    User = db.model(AuthUserTable)
    owner = _owner_query()
    crossed: list[tuple[int, str, object]] = []
    prepared: list[tuple[str, int]] = []
    samplers = {
        name: Sampler(fleet.bouncers[name], pg_fleet[name], url.database or "")
        for name, url in fleet.urls.items()
    }
    slugs = list(PLACEMENT)

    async def unit(i: int) -> None:
        slug = slugs[i % len(slugs)]
        expected = (fleet.ports[_where(slug)], f"owner@{slug}.{_where(slug)}")
        suffix = f"@{slug}.example"
        async with tenant_context(slug):
            await asyncio.sleep(0.0005 * (i % 4))
            async with db.session() as s:
                found = tuple((await s.execute(owner)).one())
                if found != expected:
                    crossed.append((i, slug, found))
                s.add(User(email=f"u{i}{suffix}"))
                await s.flush()
                # Hold the transaction (and its server connection) while others queue.
                await asyncio.sleep(0.001 * (i % 3))
                emails = list(await s.scalars(select(User.email)))
                if f"u{i}{suffix}" not in emails or not all(
                    e.endswith((suffix, f"@{slug}.{_where(slug)}")) for e in emails
                ):
                    crossed.append((i, slug, emails))
                count = await s.scalar(text("SELECT count(*) FROM pg_prepared_statements"))
                if count:
                    prepared.append((slug, count))
            async with db.session() as s:  # a new transaction: any free server connection
                found = tuple((await s.execute(owner)).one())
                if found != expected:
                    crossed.append((i, slug, found))
                path = await s.scalar(text("SELECT current_schemas(false)"))
                if "tenant_" in str(path):
                    crossed.append((i, slug, path))  # nothing left on the server connection

    listeners: list[int] = []

    async def scenario() -> None:
        try:
            await asyncio.gather(*(unit(i) for i in range(UNITS_OF_WORK)))
            # The registry's listener: on the home server, directly (not through PgBouncer).
            listeners.append(
                pg_fleet["pg1"].scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                    "AND backend_type = 'client backend' AND query ILIKE 'LISTEN%%'",
                    (fleet.urls["pg1"].database,),
                )
            )
        finally:
            await db.dispose()

    with ExitStack() as stack:
        for sampler in samplers.values():
            stack.enter_context(sampler.running())
        asyncio.run(scenario())

    assert crossed == [], crossed[:5]
    assert listeners == [1], listeners
    assert prepared == [], prepared[:5]  # no server-side prepared statement, on any server
    per_tenant = UNITS_OF_WORK // len(slugs)
    assert fleet.rows() == {slug: before[slug] + per_tenant for slug in PLACEMENT}
    for name, sampler in samplers.items():
        # Each PgBouncer really multiplexed: more clients than its 2 server connections.
        assert sampler.clients, f"SHOW POOLS on {name}'s PgBouncer never listed the database"
        assert max(sampler.clients) > SERVER_CONNECTIONS, (name, sampler.clients)
        assert max(sampler.servers) <= SERVER_CONNECTIONS, (name, sampler.servers)
        # On the home server, one backend more: the registry listener's direct connection.
        direct = listeners[0] if name == "pg1" else 0
        assert max(sampler.backends) <= SERVER_CONNECTIONS + direct, (name, sampler.backends)


def test_one_bouncer_down_fails_only_its_tenants(fleet: BouncedFleet) -> None:
    db = fleet.database(connect_timeout=2)
    owner = _owner_query()

    async def read(slug: str) -> tuple[int, str]:
        async with tenant_context(slug), db.session() as s:
            port, email = (await s.execute(owner)).one()
            return port, email

    async def scenario() -> None:
        try:
            for slug in PLACEMENT:  # pooled connections through both bouncers exist
                assert await read(slug) == (
                    fleet.ports[_where(slug)],
                    f"owner@{slug}.{_where(slug)}",
                )
            fleet.bouncers["pg2"].stop()
            for _ in range(3):
                for slug in PLACEMENT:
                    if _where(slug) == "pg2":
                        with pytest.raises(DatabaseUnavailableError):
                            await read(slug)
                    else:
                        assert await read(slug) == (fleet.ports["pg1"], f"owner@{slug}.pg1")
            servers = await db.server_health(timeout=3)
            assert servers["pg1"] is None, servers
            assert servers["pg2"] is not None, servers
            health = await db.ping_tenants(timeout=3)
            assert {slug for slug, problem in health.items() if problem is not None} == {
                "initech",
                "hooli",
            }, health
        finally:
            await db.dispose()

    asyncio.run(scenario())
