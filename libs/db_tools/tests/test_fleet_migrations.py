"""Tenants placed on the servers of a fleet, and fleet-wide tenant migrations, on real
servers (``db_tools.fleet_testing``: primaries pg1 and pg2).

core (schema-per-tenant): the registry lives on pg1 (the home server), tenant schemas on
pg1 or pg2. bibikos (database-per-tenant): the control registry on pg1, tenant databases
on pg1 or pg2. ``tenants create --server`` places a tenant; ``tenants migrate`` with pg2
down fails pg2's tenants only, naming pg2, and a rerun once it is back resumes.

Marked ``slow``: it starts the fleet (once per session) and stops pg2 for a moment.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import URL
from typer.testing import CliRunner, Result

import bibikos_db
import core_db
from db_kit.config import DatabaseConfig
from db_kit.migrations.database_tenants import TenantDatabaseMigrator
from db_kit.migrations.outcome import Outcome, Placement
from db_kit.migrations.schema_tenants import SchemaTenantMigrator
from db_kit.settings import PlacementPolicy
from db_kit.tenancy.admin import TenantAdmin
from db_shared.errors import ConfigurationError
from db_tools.fleet_testing import FleetServer, PostgresFleet
from db_tools.testing import run_sql as sql

pytest_plugins = ["db_tools.fleet_testing"]
pytestmark = pytest.mark.slow


def invoke(*args: str) -> Result:
    from db_tools.cli import build_app

    result = CliRunner().invoke(build_app(), list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def ok(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.output


def flat(text: str) -> str:
    return " ".join(text.split())


def new_slug(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def shown(url: URL) -> str:
    return url.render_as_string(hide_password=False)


@dataclass
class Fleet:
    pg1: FleetServer
    pg2: FleetServer
    home: URL  # the main URL, on pg1: it holds the registry
    other: URL  # pg2's primary

    def no_password(self, text: str) -> None:
        for server in (self.pg1, self.pg2):
            assert server.password not in text


def _reset(config: DatabaseConfig) -> None:
    config.reset()
    if config.registry is not None:
        config.registry.reset()


def _fleet(
    pg_fleet: PostgresFleet, monkeypatch: pytest.MonkeyPatch, url_variable: str, prefix: str
) -> Fleet:
    pg1, pg2 = pg_fleet["pg1"], pg_fleet["pg2"]
    home = pg1.create_database("fm")
    other = pg2.create_database("fm")
    servers = {"pg1": {"primary": shown(home)}, "pg2": {"primary": shown(other)}}
    monkeypatch.setenv(url_variable, shown(home))
    monkeypatch.setenv(f"{prefix}SERVERS", json.dumps(servers))
    monkeypatch.setenv(f"{prefix}PLACEMENT", "fewest")
    monkeypatch.setenv("ENVIRONMENT", "test")
    return Fleet(pg1, pg2, home, other)


@pytest.fixture
def core_fleet(pg_fleet: PostgresFleet, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    fleet = _fleet(pg_fleet, monkeypatch, "DATABASE_URL", "CORE_DB_")
    _reset(core_db.CONFIG)
    ok("core", "migrate")
    yield fleet
    _reset(core_db.CONFIG)


@pytest.fixture
def bibikos_fleet(pg_fleet: PostgresFleet, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    fleet = _fleet(pg_fleet, monkeypatch, "BIBIKOS_DATABASE_URL", "BIBIKOS_DB_")
    monkeypatch.delenv("BIBIKOS_TENANT_URLS", raising=False)
    _reset(bibikos_db.CONFIG)
    ok("bibikos", "migrate")
    yield fleet
    # tenant databases are not the fleet's: drop them on both servers
    for server in (fleet.pg1, fleet.pg2):
        if not server.is_running():
            server.start()
        for (name,) in sql(server.admin_url, "SELECT datname FROM pg_database"):
            if name.startswith("tenant_fm"):
                server.scalar(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _reset(bibikos_db.CONFIG)


def _schemas(url: URL) -> set[str]:
    return {r[0] for r in sql(url, "SELECT nspname FROM pg_namespace")}


def _version(url: URL, schema: str) -> str | None:
    rows = sql(url, f'SELECT version_num FROM "{schema}".alembic_version')
    return str(rows[0][0]) if rows else None


def _registry(fleet: Fleet, tenant: str) -> tuple[str | None, str, str | None, str | None]:
    ((server, status, revision, error),) = sql(
        fleet.home,
        "SELECT server, status, revision, last_error FROM core.tenants WHERE slug = :s",
        s=tenant,
    )
    return server, status, revision, error


# placement -----------------------------------------------------------------------------


def test_placement_policy_fewest_explicit_and_unknown() -> None:
    urls = {"pg1": URL.create("postgresql+psycopg", host="a"), "pg2": URL.create("x", host="b")}
    fewest = Placement("pg2", urls, "CORE_DB_SERVERS", True)
    assert fewest.choose(None, lambda: {}) == "pg2"  # ties: the home server first
    assert fewest.choose(None, lambda: {"pg2": 3, "pg1": 1}) == "pg1"
    assert fewest.choose("pg1", lambda: {}) == "pg1"
    with pytest.raises(ConfigurationError, match=r"'pg9' is not in CORE_DB_SERVERS.*pg1, pg2"):
        fewest.choose("pg9", lambda: {})
    explicit = Placement("pg1", urls, "CORE_DB_SERVERS", True, PlacementPolicy.EXPLICIT)
    with pytest.raises(ConfigurationError, match=r"CORE_DB_PLACEMENT is explicit.*--server"):
        explicit.choose(None, lambda: {})
    one = Placement("main", {"main": urls["pg1"]}, "CORE_DB_SERVERS", False)
    assert one.choose(None, lambda: {}) == "main"
    assert one.stored("main") is None  # single server: recorded exactly as before fleets
    assert fewest.stored("pg2") == "pg2"


def test_schema_tenants_placed_on_their_server(core_fleet: Fleet) -> None:
    fleet = core_fleet
    on1, on2, cli2, auto = (new_slug(p) for p in ("fa", "fb", "fc", "fd"))
    admin = TenantAdmin(core_db.CONFIG, actor="test")
    assert admin.create(on1, server="pg1").server == "pg1"
    assert admin.create(on2, server="pg2").server == "pg2"
    out = flat(ok("core", "tenants", "create", cli2, "--server", "pg2"))
    assert f"tenant {cli2} created in schema tenant_{cli2} on server pg2" in out

    # the schema is on its server only; the registry (on pg1) records where
    assert {f"tenant_{on2}", f"tenant_{cli2}"} <= _schemas(fleet.other)
    assert f"tenant_{on1}" in _schemas(fleet.home)
    assert f"tenant_{on2}" not in _schemas(fleet.home)
    assert "core" not in _schemas(fleet.other)  # no registry on pg2
    head = SchemaTenantMigrator(core_db.CONFIG).head()
    assert _version(fleet.other, f"tenant_{on2}") == head
    assert _registry(fleet, on2) == ("pg2", "active", head, None)
    assert _registry(fleet, on1)[0] == "pg1"

    # without --server, fewest: pg1 holds one tenant, pg2 two
    ok("core", "tenants", "create", auto)
    assert _registry(fleet, auto)[0] == "pg1"

    # an unknown server: refused, naming the variable and the servers; nothing registered
    bad = new_slug("fe")
    result = invoke("core", "tenants", "create", bad, "--server", "pg9")
    assert result.exit_code == 1
    assert "'pg9' is not in CORE_DB_SERVERS (known servers: pg1, pg2)" in flat(result.output)
    assert sql(fleet.home, "SELECT 1 FROM core.tenants WHERE slug = :s", s=bad) == []

    # list and status: a server column, grouped by server (home first)
    listed = ok("core", "tenants", "list")
    lines = [line for line in listed.splitlines() if "tenant_f" in line]
    assert [line.split()[1] for line in lines] == ["pg1"] * 2 + ["pg2"] * 2, listed
    ok("core", "tenants", "status")

    # drop removes the schema from its server and the row from the registry
    ok("core", "tenants", "drop", cli2, "--yes")
    assert f"tenant_{cli2}" not in _schemas(fleet.other)
    assert sql(fleet.home, "SELECT 1 FROM core.tenants WHERE slug = :s", s=cli2) == []


def test_explicit_placement_requires_server(
    core_fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORE_DB_PLACEMENT", "explicit")
    _reset(core_db.CONFIG)
    result = invoke("core", "tenants", "create", new_slug("fx"))
    assert result.exit_code == 1
    assert "CORE_DB_PLACEMENT is explicit: name the new tenant's server with --server" in flat(
        result.output
    )


def _behind(fleet: Fleet, server: str, url: URL) -> str:
    """A tenant registered on ``server`` with an empty schema (a crashed provisioning)."""
    tenant = new_slug("fm")
    sql(url, f'CREATE SCHEMA "tenant_{tenant}"')
    sql(
        fleet.home,
        "INSERT INTO core.tenants (slug, name, schema_name, server) VALUES (:s, :s, :n, :v)",
        s=tenant,
        n=f"tenant_{tenant}",
        v=server,
    )
    return tenant


def test_schema_tenants_fleet_migrate_with_a_server_down(core_fleet: Fleet) -> None:
    fleet = core_fleet
    admin = TenantAdmin(core_db.CONFIG, actor="test")
    at1, at2 = new_slug("fm"), new_slug("fm")
    admin.create(at1, server="pg1")
    admin.create(at2, server="pg2")
    behind1 = _behind(fleet, "pg1", fleet.home)
    behind2 = _behind(fleet, "pg2", fleet.other)
    head = SchemaTenantMigrator(core_db.CONFIG).head()

    fleet.pg2.stop()
    try:
        result = invoke("core", "tenants", "migrate")
        out = flat(result.output)
        assert result.exit_code == 1, result.output
        fleet.no_password(result.output)
        assert "1 migrated, 1 already at head, 2 failed (on pg2); rerun to resume." in out
        for tenant in (at2, behind2):
            assert tenant in out
        assert out.count("server pg2 unreachable") >= 2
        # pg1's tenants are at head; pg2's failures are recorded in the registry
        assert _version(fleet.home, f"tenant_{behind1}") == head
        assert _registry(fleet, behind1)[1:] == ("active", head, None)
        error = _registry(fleet, at2)[3]
        assert error is not None
        assert error.startswith("server pg2 unreachable")
        status = invoke("core", "tenants", "status")
        assert status.exit_code == 3, status.output
        assert "pg2" in status.output
        assert "unreachable" in status.output
        fleet.no_password(status.output)
    finally:
        fleet.pg2.start()

    # a rerun resumes: pg2's behind tenant migrated (by a helper process of pg2's pool,
    # which records it in the registry on pg1), the others at head, errors cleared
    results = SchemaTenantMigrator(core_db.CONFIG).migrate_all(workers=2, min_per_helper=1)
    by_slug = {r.slug: r for r in results}
    assert by_slug[behind2].pid not in (0, os.getpid())
    assert by_slug[behind2].status is Outcome.MIGRATED
    assert by_slug[behind2].server == "pg2"
    assert by_slug[at2].status is Outcome.UP_TO_DATE
    assert by_slug[behind1].status is Outcome.UP_TO_DATE
    assert not [r for r in results if r.failed]
    assert _version(fleet.other, f"tenant_{behind2}") == head
    for tenant in (at1, at2, behind1, behind2):
        assert _registry(fleet, tenant)[1:] == ("active", head, None), tenant
    assert "0 migrated" in ok("core", "tenants", "migrate")
    ok("core", "tenants", "status")


# database-per-tenant -------------------------------------------------------------------


def _databases(server: FleetServer) -> set[str]:
    return {r[0] for r in sql(server.admin_url, "SELECT datname FROM pg_database")}


def test_tenant_databases_placed_and_migrated_across_the_fleet(bibikos_fleet: Fleet) -> None:
    fleet = bibikos_fleet
    on1, on2 = new_slug("fm"), new_slug("fm")
    TenantAdmin(bibikos_db.CONFIG, actor="test").create(on1, server="pg1")
    out = flat(ok("bibikos", "tenants", "create", on2, "--server", "pg2"))
    assert "created on server pg2" in out
    assert f"tenant_{on2}" in _databases(fleet.pg2)
    assert f"tenant_{on2}" not in _databases(fleet.pg1)
    assert f"tenant_{on1}" in _databases(fleet.pg1)
    rows = dict(sql(fleet.home, "SELECT slug, server FROM control.tenants"))
    assert rows[on1] == "pg1"
    assert rows[on2] == "pg2"
    listed = ok("bibikos", "tenants", "list")
    assert "pg2" in listed
    bad = invoke("bibikos", "tenants", "create", new_slug("fm"), "--server", "nope")
    assert bad.exit_code == 1
    assert "BIBIKOS_DB_SERVERS (known servers: pg1, pg2)" in flat(bad.output)

    fleet.pg2.stop()
    try:
        result = invoke("bibikos", "tenants", "migrate")
        assert result.exit_code == 1, result.output
        fleet.no_password(result.output)
        out = flat(result.output)
        assert f"{on2} (pg2): failed: server pg2 unreachable" in out
        assert f"{on1} (pg1): up to date" in out
        # create on a server that is down leaves nothing behind
        down = new_slug("fm")
        refused = invoke("bibikos", "tenants", "create", down, "--server", "pg2")
        assert refused.exit_code == 1
        assert sql(fleet.home, "SELECT 1 FROM control.tenants WHERE slug = :s", s=down) == []
    finally:
        fleet.pg2.start()

    results = TenantDatabaseMigrator(bibikos_db.CONFIG).migrate_all()
    assert {r.slug: (r.server, r.status) for r in results if r.slug in (on1, on2)} == {
        on1: ("pg1", Outcome.UP_TO_DATE),
        on2: ("pg2", Outcome.UP_TO_DATE),
    }
    ok("bibikos", "tenants", "status")
    ok("bibikos", "tenants", "drop", on2, "--yes", "--force")
    assert f"tenant_{on2}" not in _databases(fleet.pg2)


def test_development_reset_empties_tenant_schemas_on_every_server(
    core_fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`db core reset`: each tenant's schema dropped and migrated again on its own server;
    no stray schema of a pg2 tenant appears on the home server."""
    on_home, on_pg2 = new_slug("rh"), new_slug("rp")
    ok("core", "tenants", "create", on_home, "--server", "pg1")
    ok("core", "tenants", "create", on_pg2, "--server", "pg2")
    sql(core_fleet.home, f"INSERT INTO tenant_{on_home}.auth_users (email) VALUES ('a@x.org')")
    sql(core_fleet.other, f"INSERT INTO tenant_{on_pg2}.auth_users (email) VALUES ('b@x.org')")
    monkeypatch.setenv("ENVIRONMENT", "development")
    _reset(core_db.CONFIG)
    report = SchemaTenantMigrator(core_db.CONFIG).reset()
    assert set(report.tenants_rebuilt) >= {on_home, on_pg2}
    assert report.tenants_failed == ()
    assert sql(core_fleet.home, f"SELECT count(*) FROM tenant_{on_home}.auth_users") == [(0,)]
    assert sql(core_fleet.other, f"SELECT count(*) FROM tenant_{on_pg2}.auth_users") == [(0,)]
    stray = sql(
        core_fleet.home, "SELECT count(*) FROM pg_namespace WHERE nspname = :s",
        s=f"tenant_{on_pg2}",
    )  # fmt: skip
    assert stray == [(0,)]
