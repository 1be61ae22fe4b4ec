"""Tenant lifecycle from the CLI, in both tenancy modes, on a real PostgreSQL.

core (schema-per-tenant) and bibikos (database-per-tenant, its registry in the control
schema of its main database) get the same commands: create, suspend, reactivate, rename
(data kept), clone from a template (rows, identity sequences and plugins), domains,
plugins, super admins with API tokens, drop, and an audit naming who did what.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import URL
from typer.testing import CliRunner, Result

import bibikos_db
import core_db
from db_kit.config import DatabaseConfig
from db_kit.tenancy.admin import TenantAdmin
from db_tools.cli.tenant_ops import cli_actor
from db_tools.testing import PostgresServer
from db_tools.testing import run_sql as sql


def invoke(*args: str, input: str | None = None) -> Result:
    from db_tools.cli import build_app

    result = CliRunner().invoke(build_app(), list(args), input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def ok(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.output


def refused(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    return " ".join(result.output.split())


def slug(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@dataclass
class Mode:
    name: str
    config: DatabaseConfig
    main: URL
    server: PostgresServer

    def tenant_url(self, tenant: str) -> URL:
        """Where a tenant's tables are: its schema's database, or its own database."""
        if self.name == "core":
            return self.main
        row = sql(self.main, "SELECT database_name FROM control.tenants WHERE slug = :s", s=tenant)
        return self.main.set(database=row[0][0])

    def table(self, tenant: str, table: str) -> str:
        if self.name == "core":
            row = sql(self.main, "SELECT schema_name FROM core.tenants WHERE slug = :s", s=tenant)
            return f'"{row[0][0]}".{table}'
        return table

    def count(self, tenant: str, table: str) -> int:
        return int(
            sql(self.tenant_url(tenant), f"SELECT count(*) FROM {self.table(tenant, table)}")[0][0]
        )

    def status(self, tenant: str) -> str | None:
        schema = "core" if self.name == "core" else "control"
        rows = sql(self.main, f"SELECT status FROM {schema}.tenants WHERE slug = :s", s=tenant)
        return str(rows[0][0]) if rows else None

    def admin(self) -> TenantAdmin:
        return TenantAdmin(self.config, actor="test", url=self.main)


@pytest.fixture(params=["core", "bibikos"])
def mode(
    request: pytest.FixtureRequest,
    fresh_database: Callable[..., URL],
    postgres_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Mode]:
    name: str = request.param
    main = fresh_database(f"{name}_life")
    variable = "DATABASE_URL" if name == "core" else "BIBIKOS_DATABASE_URL"
    monkeypatch.setenv(variable, main.render_as_string(hide_password=False))
    monkeypatch.setenv("ENVIRONMENT", "development")
    monkeypatch.delenv("BIBIKOS_TENANT_URLS", raising=False)
    config = core_db.CONFIG if name == "core" else bibikos_db.CONFIG
    for c in (config, config.registry):
        assert c is not None
        c.reset()
    ok(name, "migrate")
    yield Mode(name, config, main, postgres_server)
    for c in (config, config.registry):
        assert c is not None
        c.reset()


def track(mode: Mode, tenant: str) -> None:
    """Database-per-tenant: drop the tenant's database with the test server."""
    if mode.name == "bibikos":
        mode.server.created.append(f"tenant_{tenant}")


def test_lifecycle_from_the_cli(mode: Mode) -> None:
    n = mode.name
    first, renamed, copy = slug("a"), slug("b"), slug("c")
    for t in (first, copy):
        track(mode, t)

    ok(n, "tenants", "create", first, "--name", "First Gym")
    assert mode.status(first) == "active"
    ok(n, "seed", "--tenant", first)
    for i in range(3):
        sql(
            mode.tenant_url(first),
            f"INSERT INTO {mode.table(first, 'auth_users')} (email) VALUES (:e)",
            e=f"user{i}@example.com",
        )
    users = mode.count(first, "auth_users")
    assert users == 3
    assert mode.count(first, "roles") > 0

    # suspend: kept suspended through a migration; reactivate brings it back
    out = ok(n, "tenants", "suspend", first, "--reason", "unpaid invoice")
    assert "suspended" in out
    assert mode.status(first) == "suspended"
    ok(n, "tenants", "migrate", "--tenant", first)
    assert mode.status(first) == "suspended"
    ok(n, "tenants", "reactivate", first)
    assert mode.status(first) == "active"

    # rename: same data under the new slug
    ok(n, "tenants", "rename", first, renamed)
    assert mode.status(first) is None
    assert mode.count(renamed, "auth_users") == users
    if n == "core":
        schemas = {r[0] for r in sql(mode.main, "SELECT nspname FROM pg_namespace")}
        assert f"tenant_{renamed}" in schemas
        assert f"tenant_{first}" not in schemas

    # plugins and domains
    ok(n, "tenants", "plugins", "add", "billing", "--name", "Billing", "--version", "1.0")
    ok(n, "tenants", "plugins", "enable", renamed, "billing", "--config", '{"plan": "pro"}')
    ok(n, "tenants", "domains", "add", renamed, f"{renamed}.Example.com", "--primary")
    shown = ok(n, "tenants", "show", renamed)
    assert f"{renamed}.example.com" in shown
    assert "billing" in shown

    # clone: every row, identity sequences past the copied ids, plugins; not domains
    ok(n, "tenants", "clone", renamed, copy)
    tables = ["auth_users", "roles", "products", "prices"]
    for table in tables:
        assert mode.count(copy, table) == mode.count(renamed, table), table
    sql(
        mode.tenant_url(copy),
        f"INSERT INTO {mode.table(copy, 'auth_users')} (email) VALUES ('new@example.com')",
    )
    info = mode.admin().tenant(copy)
    assert info.plugins == (("billing", True),)
    assert info.domains == ()
    ok(n, "tenants", "plugins", "disable", copy, "billing")
    assert mode.admin().tenant(copy).plugins == (("billing", False),)
    # the clone's rows are its own: the template is unchanged
    assert mode.count(renamed, "auth_users") == users

    ok(n, "tenants", "domains", "remove", f"{renamed}.example.com")
    assert mode.admin().tenant(renamed).domains == ()

    # every change is in the audit, with who made it
    audit = ok(n, "tenants", "audit", "--limit", "100")
    entries = mode.admin().audit(limit=100)
    actions = [e.action for e in reversed(entries)]
    assert actions == [
        "create", "suspend", "reactivate", "rename", "plugin_add", "plugin_enable",
        "domain_add", "clone", "plugin_disable", "domain_remove",
    ]  # fmt: skip
    assert {e.actor for e in entries} == {cli_actor()}
    assert entries[-2].detail == {"from": "active", "reason": "unpaid invoice"}
    assert "rename" in audit

    # drop: data and registry row gone, and recorded
    ok(n, "tenants", "drop", copy, "-y", *(["--force"] if n == "bibikos" else []))
    assert mode.status(copy) is None
    if n == "bibikos":
        databases = {r[0] for r in sql(mode.main, "SELECT datname FROM pg_database")}
        assert f"tenant_{copy}" not in databases
    assert mode.admin().audit(copy, limit=1)[0].action == "drop"


def test_super_admins_and_their_tokens(mode: Mode) -> None:
    n = mode.name
    result = invoke(n, "admins", "add", "Ops@Example.com")
    assert result.exit_code == 0, result.output
    token = next(line for line in result.output.split() if line.startswith("sa_"))
    admin = mode.admin()
    assert admin.authenticate(token) is not None
    assert admin.authenticate(token + "x") is None
    stored = sql(
        mode.main,
        f"SELECT token_hash FROM {'core' if n == 'core' else 'control'}.super_admins",
    )
    assert token not in json.dumps([str(r[0]) for r in stored])  # only the hash is kept

    listed = ok(n, "admins", "list")
    assert "ops@example.com" in listed
    assert "already a super admin" in refused(n, "admins", "add", "ops@example.com")

    rotated = invoke(n, "admins", "token", "ops@example.com")
    new_token = next(line for line in rotated.output.split() if line.startswith("sa_"))
    assert admin.authenticate(token) is None
    assert admin.authenticate(new_token) is not None

    ok(n, "admins", "remove", "ops@example.com")
    assert admin.authenticate(new_token) is None
    assert [e.action for e in reversed(admin.audit(limit=10))] == [
        "admin_add",
        "admin_token",
        "admin_remove",
    ]


def test_bad_input_is_refused_with_the_fix_and_changes_nothing(mode: Mode) -> None:
    n = mode.name
    one, two = slug("d"), slug("e")
    for t in (one, two):
        track(mode, t)
    ok(n, "tenants", "create", one)
    ok(n, "tenants", "create", two)

    assert "already exists" in refused(n, "tenants", "rename", one, two)
    assert mode.status(one) == "active"
    assert mode.status(two) == "active"
    assert "not found" in refused(n, "tenants", "suspend", "nosuchtenant")
    assert "Invalid tenant slug" in refused(n, "tenants", "suspend", "x; DROP SCHEMA core")
    assert "Invalid tenant slug" in refused(n, "tenants", "rename", one, "Bad-Slug")
    assert "not a host name" in refused(n, "tenants", "domains", "add", one, "http://x.com/a")
    ok(n, "tenants", "domains", "add", one, "taken.example.com")
    assert "already serves tenant" in refused(
        n, "tenants", "domains", "add", two, "taken.example.com"
    )
    assert "plugin" in refused(n, "tenants", "plugins", "enable", one, "nosuchplugin")
    assert "JSON" in refused(n, "tenants", "plugins", "enable", one, "x", "--config", "{bad")
    assert "already exists" in refused(n, "tenants", "clone", one, two)
    assert "not found" in refused(n, "tenants", "clone", "nosuchtenant", slug("f"))

    # a template behind head cannot be cloned (its tables would not match)
    schema = "core" if n == "core" else "control"
    sql(mode.main, f"UPDATE {schema}.tenants SET revision = 'old' WHERE slug = :s", s=one)
    assert "migrate it first" in refused(n, "tenants", "clone", one, slug("g"))

    actions = [e.action for e in reversed(mode.admin().audit(limit=50))]
    assert actions == ["create", "create", "domain_add"]


def test_an_app_engine_is_borrowed_and_left_as_it_was(mode: Mode) -> None:
    """The admin API passes the app's pooled engine: operations run on its connections with
    the lock timeout set, and every connection goes back with the server defaults."""
    from sqlalchemy import create_engine, text

    engine = create_engine(mode.main, pool_size=1, max_overflow=0)
    try:
        admin = TenantAdmin(mode.config, actor="test", engine=engine)
        tenant = slug("p")
        track(mode, tenant)
        admin.create(tenant)
        assert admin.suspend(tenant).status == "suspended"
        with admin.connect() as conn:
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "2s"
        with engine.connect() as conn:  # the same pooled connection, given back
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "0"
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "0"
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        engine.dispose()
