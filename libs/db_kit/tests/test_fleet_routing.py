"""Schema-per-tenant tenants placed on two real servers (``db_tools.fleet_testing``: pg1,
the home server holding the registry, and pg2): each unit of work runs on its tenant's
server, in its tenant's schema; a server down fails only its tenants; a tenant found gone
from its server is re-read from the registry and the unit of work retried elsewhere.

Which server answered is proven with ``inet_server_port()`` inside the session.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Select, func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

import core_db
from auth.tables import AuthUserTable
from core_db.config import REGISTRY
from core_db.settings import CoreSettings
from db_kit.database import SQLAlchemyDatabase
from db_kit.fleet import divided_settings
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.schema_tenants import SchemaTenantMigrator
from db_shared import DatabaseUnavailableError, NotFoundError, transact
from db_shared.tenancy import TenantMovedError, UnknownTenantError, tenant_context
from db_tools.fleet_testing import PostgresFleet, fleet_environment

pytest_plugins = ["db_tools.fleet_testing"]
pytestmark = pytest.mark.slow

# slug -> server (None: left unplaced, which means the home server)
PLACEMENT: dict[str, str | None] = {"acme": "pg1", "globex": None, "initech": "pg2", "hooli": "pg2"}


@dataclass
class Fleet:
    urls: dict[str, URL]
    ports: dict[str, int]

    def settings(self, **more: object) -> CoreSettings:
        servers = {
            name: {"primary": url.render_as_string(hide_password=False)}
            for name, url in self.urls.items()
        }
        return CoreSettings(
            url=self.urls["pg1"].render_as_string(hide_password=False),
            servers=json.dumps(servers),
            environment="test",
            multi_tenant=True,
            **more,
        )

    def database(self, **more: object) -> SQLAlchemyDatabase:
        return SQLAlchemyDatabase(core_db.CONFIG, settings=self.settings(**more))

    def port_of(self, slug: str) -> int:
        return self.ports[PLACEMENT[slug] or "pg1"]


def _sql(url: URL, statement: str, **params: object) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement), params)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def fleet(pg_fleet: PostgresFleet) -> Iterator[Fleet]:
    urls = {name: pg_fleet[name].create_database("fleet_routing") for name in ("pg1", "pg2")}
    # The home server holds the registry; pg2 needs nothing but its database.
    Migrator(REGISTRY, urls["pg1"]).upgrade()
    Migrator(core_db.CONFIG, urls["pg1"]).upgrade()
    with fleet_environment(core_db.CONFIG, urls):
        for slug, server in PLACEMENT.items():
            SchemaTenantMigrator(core_db.CONFIG).create(slug, server=server or "pg1")
    # A row from before the fleet names no server: the home one.
    _sql(urls["pg1"], "UPDATE core.tenants SET server = NULL WHERE slug = 'globex'")
    for slug, server in PLACEMENT.items():
        # The same primary key in every tenant; the email names the tenant and its server.
        _sql(
            urls[server or "pg1"],
            f"INSERT INTO tenant_{slug}.auth_users (id, email) VALUES (1, :e)",
            e=f"owner@{slug}.{server or 'pg1'}",
        )
    yield Fleet(urls, {name: pg_fleet[name].port for name in urls})
    for name, url in urls.items():
        pg_fleet[name].drop_database(url)


def _owner_query() -> Select[tuple[int, str]]:
    """The owner's email, and the port of the server that answered (ORM: the tenant's
    schema is translated in, as for every feature query)."""
    user = SQLAlchemyDatabase(core_db.CONFIG).model(AuthUserTable)
    return select(func.inet_server_port(), user.email).where(user.id == 1)


async def _owner(session: AsyncSession) -> tuple[int, str]:
    row = (await session.execute(_owner_query())).one()
    return row[0], row[1]


def test_each_tenant_reads_only_its_own_schema_on_its_own_server(fleet: Fleet) -> None:
    db = fleet.database()
    assert db.fleet is not None
    assert db.fleet.home == "pg1"
    crossed: list[tuple[str, int, str]] = []

    async def visit(i: int) -> None:
        slug = random.choice(list(PLACEMENT))
        with tenant_context(slug):
            await asyncio.sleep(0)
            reader = db.read_session if i % 3 == 0 else db.session
            async with reader() as s:
                port, email = await _owner(s)
        expected = (fleet.port_of(slug), f"owner@{slug}.{PLACEMENT[slug] or 'pg1'}")
        if (port, email) != expected:
            crossed.append((slug, port, email))

    async def scenario() -> None:
        try:
            await asyncio.gather(*(visit(i) for i in range(400)))
        finally:
            await db.dispose()

    asyncio.run(scenario())
    assert crossed == [], crossed[:5]


def test_engines_per_server_share_the_connection_budget(fleet: Fleet) -> None:
    settings = fleet.settings(pool_size=6, max_overflow=4)
    db = SQLAlchemyDatabase(core_db.CONFIG, settings=settings)
    fleet_engines = db.fleet
    assert fleet_engines is not None
    assert (fleet_engines.settings.pool_size, fleet_engines.settings.max_overflow) == (3, 2)
    assert db.engines.async_engine.pool.size() == 3  # type: ignore[attr-defined]
    pg2 = fleet_engines.engines("pg2")
    assert pg2.async_engine.pool.size() == 3  # type: ignore[attr-defined]
    assert pg2 is fleet_engines.engines("pg2")  # one set per server, not per tenant
    assert divided_settings(settings, 1) is settings
    db.dispose_sync()


def test_an_unplaced_or_unknown_tenant_is_never_guessed(fleet: Fleet) -> None:
    db = fleet.database()

    async def scenario() -> None:
        try:
            with tenant_context("nosuch"), pytest.raises(UnknownTenantError):
                async with db.session():
                    pass
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_sync_sessions_follow_the_placement(fleet: Fleet) -> None:
    db = fleet.database()
    try:
        for slug in PLACEMENT:
            with tenant_context(slug), db.sync_session() as s:
                port, email = s.execute(_owner_query()).one()
            assert (port, email) == (
                fleet.port_of(slug),
                f"owner@{slug}.{PLACEMENT[slug] or 'pg1'}",
            )
    finally:
        db.dispose_sync()


def test_a_server_down_fails_only_its_tenants_and_recovers_without_restart(
    fleet: Fleet, pg_fleet: PostgresFleet
) -> None:
    db = fleet.database(connect_timeout=2)

    async def owner(slug: str) -> tuple[int, str]:
        with tenant_context(slug):
            async with db.session() as s:
                return await _owner(s)

    async def scenario() -> None:
        await owner("initech")  # pooled connections to pg2 exist before it goes down
        pg_fleet["pg2"].stop()
        try:
            with pytest.raises(DatabaseUnavailableError):
                await owner("initech")
            assert (await owner("acme"))[0] == fleet.ports["pg1"]
            health = await db.ping_tenants(timeout=3)
            assert health["acme"] is None
            assert health["globex"] is None
            assert health["initech"] is not None
            assert "server pg2" in health["initech"]
            servers = await db.server_health(timeout=3)
            assert servers["pg1"] is None
            assert servers["pg2"] is not None
        finally:
            pg_fleet["pg2"].start()
        # The same Database, no restart: the pool's pre-ping replaces dead connections.
        assert await owner("initech") == (fleet.ports["pg2"], "owner@initech.pg2")
        assert (await db.server_health()) == {"pg1": None, "pg2": None}
        await db.dispose()

    asyncio.run(scenario())


def test_a_tenant_gone_from_its_server_is_re_read_and_retried_elsewhere(fleet: Fleet) -> None:
    """hooli is routed to pg2; while its unit of work runs, the registry moves it to pg1
    and its schema leaves pg2 (what a move's last step does). The statement fails with
    "schema does not exist": the placement is read again, ``TenantMovedError`` raised, and
    ``transact`` runs the work again, on pg1. Nothing is ever read from the wrong place."""
    home, pg2 = fleet.urls["pg1"], fleet.urls["pg2"]
    db = fleet.database()
    attempts: list[int] = []

    async def work(session: AsyncSession) -> tuple[int, str]:
        if not attempts:
            # The move happens between routing and the first statement.
            await asyncio.to_thread(_move_hooli_to_pg1, home, pg2)
        attempts.append(1)
        return await _owner(session)

    async def scenario() -> None:
        try:
            with tenant_context("hooli"):
                async with db.session() as s:  # routed (and cached) on pg2 first
                    assert (await _owner(s))[0] == fleet.ports["pg2"]
                assert await transact(db, work) == (fleet.ports["pg1"], "owner@hooli.pg1")
                # Without transact, the caller sees the retryable error itself.
                await _moved_under_a_session(db, home, pg2)
        finally:
            await db.dispose()

    asyncio.run(scenario())
    assert len(attempts) == 2


async def _moved_under_a_session(db: SQLAlchemyDatabase, home: URL, pg2: URL) -> None:
    session = db.session()
    s = await session.__aenter__()
    await asyncio.to_thread(_move_hooli_to_pg2_and_drop, home, pg2)
    try:
        await _owner(s)
    except Exception as exc:
        with pytest.raises(TenantMovedError):
            await session.__aexit__(type(exc), exc, exc.__traceback__)
    else:
        raise AssertionError("the tenant's schema was dropped: the read must fail")


def _move_hooli_to_pg1(home: URL, pg2: URL) -> None:
    _sql(home, "CREATE SCHEMA IF NOT EXISTS tenant_hooli")
    _sql(home, "CREATE TABLE tenant_hooli.auth_users (LIKE tenant_acme.auth_users INCLUDING ALL)")
    _sql(home, "INSERT INTO tenant_hooli.auth_users (id, email) VALUES (1, 'owner@hooli.pg1')")
    _sql(
        home,
        "UPDATE core.tenants SET server = 'pg1', placement_version = placement_version + 1 "
        "WHERE slug = 'hooli'",
    )
    _sql(pg2, "DROP SCHEMA tenant_hooli CASCADE")


def _move_hooli_to_pg2_and_drop(home: URL, pg2: URL) -> None:
    _sql(
        home,
        "UPDATE core.tenants SET server = 'pg2', placement_version = placement_version + 1 "
        "WHERE slug = 'hooli'",
    )
    _sql(home, "DROP SCHEMA tenant_hooli CASCADE")


def test_rename_and_clone_of_a_tenant_on_another_server(fleet: Fleet) -> None:
    """The registry is on pg1, the tenant's schema on pg2: rename renames the schema on
    pg2; clone makes the copy on pg2 too. Both are then routed there."""
    from db_kit.tenancy.admin import TenantAdmin

    with fleet_environment(core_db.CONFIG, fleet.urls):
        admin = TenantAdmin(core_db.CONFIG, actor="test")
        created = admin.create("wayne", server="pg2")
        assert created.server == "pg2"
        _sql(
            fleet.urls["pg2"], "INSERT INTO tenant_wayne.auth_users (id, email) VALUES (1, 'b@w.x')"
        )
        renamed = admin.rename("wayne", "wayne_ent")
        assert (renamed.slug, renamed.location, renamed.server) == (
            "wayne_ent",
            "tenant_wayne_ent",
            "pg2",
        )
        cloned = admin.clone("wayne_ent", "wayne_copy")
        assert cloned.server == "pg2"
        db = fleet.database()

        async def owners() -> list[tuple[int, str]]:
            found = []
            for slug in ("wayne_ent", "wayne_copy"):
                with tenant_context(slug):
                    async with db.session() as s:
                        found.append(await _owner(s))
            await db.dispose()
            return found

        assert asyncio.run(owners()) == [(fleet.ports["pg2"], "b@w.x")] * 2
        with pytest.raises(NotFoundError):
            admin.clone("nosuch", "wayne_bad")
        admin.drop("wayne_copy")
        admin.drop("wayne_ent")
        assert (
            _sql_rows(
                fleet.urls["pg2"],
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant_wayne%'",
            )
            == []
        )


def _sql_rows(url: URL, statement: str) -> list[tuple[object, ...]]:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(statement))]
    finally:
        engine.dispose()
