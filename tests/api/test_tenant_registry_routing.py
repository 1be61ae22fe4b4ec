"""Routing from the tenant registry over real HTTP: changes reach every worker at once.

my_api (schema-per-tenant) runs under ``uvicorn --workers 2`` in a subprocess; each worker
caches registry answers and LISTENs for the registry's NOTIFY, so a suspension made with
plain SQL is refused by both workers within a second (a TTL cache would serve the tenant
for seconds more), and a domain row added or removed is served or refused without a
restart. bibikos_api (database-per-tenant) serves a tenant registered in its control
schema beside those of the static map.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import LiveServer
from sqlalchemy.engine import URL

import bibikos_db
import core_db
from api_kit.tenancy import TenantMiddleware
from core_db.config import REGISTRY
from db_kit.database import SQLAlchemyDatabase
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.schema_tenants import SchemaTenantMigrator
from db_shared import Tenant, TenantSuspendedError
from db_tools.testing import run_sql, unused_port, url_string
from my_api.main import MyApiRouting, create_app

ROOT = Path(__file__).resolve().parents[2]
ROUTE = "/payments/products"  # a tenant route that needs no user
REQUESTS = 20


@contextmanager
def uvicorn(app: str, env: dict[str, str], log: Path, workers: int = 1) -> Iterator[str]:
    """``uvicorn app --factory`` in its own process group; stopped (the group) at the end."""
    port = unused_port()
    command = [
        sys.executable, "-m", "uvicorn", app, "--factory", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/health/live", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield base
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def fresh_get(base: str, host: str, path: str = ROUTE) -> httpx.Response:
    """A request on a new connection, so the workers share the requests between them."""
    return httpx.get(f"{base}{path}", headers={"Host": host, "Connection": "close"}, timeout=30)


def answers(base: str, host: str, count: int = REQUESTS) -> list[tuple[int, str | None]]:
    found = []
    for _ in range(count):
        r = fresh_get(base, host)
        code = r.json().get("code") if r.status_code >= 400 else None
        found.append((r.status_code, code))
    return found


def listeners(url: URL, app: str) -> int:
    rows = run_sql(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = :a AND datname = :d",
        a=f"{app} registry listener",
        d=url.database,
    )
    return int(rows[0][0])


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


def after_change(url: URL, statement: str, **params: object) -> float:
    """Run ``statement`` (committed) and return when it was committed (monotonic)."""
    run_sql(url, statement, **params)
    return time.monotonic()


# my_api: schema-per-tenant, two workers --------------------------------------------------


@pytest.fixture
def core_url(fresh_database: Callable[..., URL]) -> URL:
    url = fresh_database("registry_http")
    Migrator(REGISTRY, url).upgrade()
    Migrator(core_db.CONFIG, url).upgrade()
    for slug in ("acme", "globex"):
        SchemaTenantMigrator(core_db.CONFIG, url).create(slug)
    run_sql(url, "UPDATE core.tenants SET status = 'active'")
    return url


@pytest.fixture
def my_api(core_url: URL, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """my_api under ``uvicorn --workers 2``, each worker listening to the registry."""
    app = f"registry-http-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DATABASE_URL": url_string(core_url),
        "CORE_DB_MULTI_TENANT": "true",
        "CORE_DB_APPLICATION_NAME": app,
        "MY_API_TENANT_BASE_DOMAIN": "example.test",
    }
    with uvicorn("my_api.main:create_app", env, tmp_path / "uvicorn.log", workers=2) as base:
        # Each worker starts its listener on its first tenant request: wait for both.
        def both_listen() -> bool:
            assert fresh_get(base, "acme.example.test").status_code == 200
            return listeners(core_url, app) == 2

        wait_for(both_listen, 60, "both workers listening to the registry")
        yield base, app


def test_a_suspension_reaches_both_workers_within_a_second(
    my_api: tuple[str, str], core_url: URL
) -> None:
    base, _ = my_api
    assert answers(base, "acme.example.test") == [(200, None)] * REQUESTS  # both cache it

    committed = after_change(
        core_url, "UPDATE core.tenants SET status = 'suspended' WHERE slug = 'acme'"
    )
    time.sleep(0.1)
    refused = answers(base, "acme.example.test")
    elapsed = time.monotonic() - committed
    assert refused == [(403, "tenant_suspended")] * REQUESTS
    assert elapsed < 1.0, f"{REQUESTS} refusals took {elapsed:.2f} s after the commit"
    body = fresh_get(base, "acme.example.test").json()
    assert body["status"] == 403
    assert "suspended" in body["detail"]
    # Other tenants are not affected.
    assert answers(base, "globex.example.test", 5) == [(200, None)] * 5

    committed = after_change(
        core_url, "UPDATE core.tenants SET status = 'active' WHERE slug = 'acme'"
    )
    time.sleep(0.1)
    assert answers(base, "acme.example.test") == [(200, None)] * REQUESTS
    assert time.monotonic() - committed < 1.0


def test_a_registry_domain_is_served_and_withdrawn_without_a_restart(
    my_api: tuple[str, str], core_url: URL
) -> None:
    base, _ = my_api
    host = "shop.customer.test"
    # Unknown in both workers (and the answer cached).
    assert answers(base, host) == [(404, "unknown_tenant")] * REQUESTS

    committed = after_change(
        core_url,
        "INSERT INTO core.tenant_domains (domain, tenant_id) "
        "SELECT :d, id FROM core.tenants WHERE slug = 'globex'",
        d=host,
    )
    time.sleep(0.1)
    assert answers(base, host) == [(200, None)] * REQUESTS
    assert time.monotonic() - committed < 1.0
    # It is globex's: a user registered there is not acme's.
    email = {"email": "domain@example.com", "password": "long enough 1"}
    assert (
        httpx.post(f"{base}/auth/register", json=email, headers={"Host": host}).status_code == 201
    )
    schemas = run_sql(core_url, "SELECT count(*) FROM tenant_globex.auth_users")
    assert schemas == [(1,)]

    after_change(core_url, "DELETE FROM core.tenant_domains WHERE domain = :d", d=host)
    time.sleep(0.1)
    assert answers(base, host) == [(404, "unknown_tenant")] * REQUESTS


def test_registry_domains_alone_are_enough_routing(core_url: URL) -> None:
    run_sql(
        core_url,
        "INSERT INTO core.tenant_domains (domain, tenant_id) "
        "SELECT 'acme.io', id FROM core.tenants WHERE slug = 'acme'",
    )
    database = SQLAlchemyDatabase(core_db.CONFIG, url=core_url, multi_tenant=True)
    app = create_app(database, MyApiRouting())  # no MY_API_TENANT_* at all
    with LiveServer(app) as base:
        assert fresh_get(base, "acme.io").status_code == 200
        for host in ("acme.example.test", "globex.io", "127.0.0.1"):
            r = fresh_get(base, host)
            assert (r.status_code, r.json()["code"]) == (404, "unknown_tenant"), host


def test_a_suspended_tenant_closes_its_websocket_as_a_policy_violation() -> None:
    async def known(tenant: Tenant) -> bool:
        raise TenantSuspendedError(tenant.slug)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("a suspended tenant reached the app")

    async def resolver(scope: Any) -> Tenant:
        return Tenant("acme")

    class Resolver:
        def resolve(self, scope: Any) -> Any:
            return resolver(scope)

    middleware = TenantMiddleware(app, Resolver(), known=known)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {"type": "websocket", "path": "/ws", "headers": [(b"host", b"acme.example.test")]}
    asyncio.run(middleware(scope, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008}]


# bibikos_api: database-per-tenant, static map and control registry -----------------------


@pytest.fixture
def bibikos(
    fresh_database: Callable[..., URL], database_at_head: Callable[..., URL]
) -> dict[str, URL]:
    """A control database with the registry, a static-map tenant and an unregistered one,
    all on the test server (a registered tenant's database shares the control server)."""
    control = fresh_database("control")
    registry = bibikos_db.CONFIG.registry
    assert registry is not None
    Migrator(registry, control).upgrade()
    return {
        "control": control,
        "us": database_at_head(bibikos_db.CONFIG),
        "acme": database_at_head(bibikos_db.CONFIG),
    }


def users(url: URL) -> int:
    return int(run_sql(url, "SELECT count(*) FROM auth_users")[0][0])


def connections_to(url: URL) -> int:
    rows = run_sql(
        url.set(database="postgres"),
        "SELECT count(*) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()",
        d=url.database,
    )
    return int(rows[0][0])


def test_bibikos_serves_a_newly_registered_tenant_without_a_restart(
    bibikos: dict[str, URL], tmp_path: Path
) -> None:
    control, us, acme = bibikos["control"], bibikos["us"], bibikos["acme"]
    env = {
        **os.environ,
        "BIBIKOS_DATABASE_URL": url_string(control),
        "BIBIKOS_TENANT_URLS": json.dumps({"us": url_string(us)}),
        "BIBIKOS_DB_MULTI_TENANT": "true",
        "BIBIKOS_API_TENANT_HOSTS": json.dumps({"us": ["us.gym.test"]}),
    }
    body = {"email": "member@example.com", "password": "long enough 1"}

    def register(host: str) -> httpx.Response:
        return httpx.post(f"{base}/auth/register", json=body, headers={"Host": host}, timeout=30)

    with uvicorn("bibikos_api.main:create_app", env, tmp_path / "uvicorn.log") as base:
        assert register("us.gym.test").status_code == 201  # the static map still serves
        missing = register("acme.gym.test")
        assert (missing.status_code, missing.json()["code"]) == (404, "unknown_tenant")

        run_sql(
            control,
            "INSERT INTO control.tenants (slug, name, status, database_name) "
            "VALUES ('acme', 'Acme', 'active', :d)",
            d=acme.database,
        )
        run_sql(
            control,
            "INSERT INTO control.tenant_domains (domain, tenant_id) "
            "SELECT 'acme.gym.test', id FROM control.tenants WHERE slug = 'acme'",
        )
        time.sleep(0.1)
        created = register("acme.gym.test")
        assert created.status_code == 201, created.text
        assert (users(us), users(acme)) == (1, 1)
        assert connections_to(acme) > 0

        run_sql(control, "UPDATE control.tenants SET status = 'suspended' WHERE slug = 'acme'")
        time.sleep(0.1)
        refused = register("acme.gym.test")
        assert (refused.status_code, refused.json()["code"]) == (403, "tenant_suspended")
        # Its engines are dropped: no connection to its database is kept.
        wait_for(lambda: connections_to(acme) == 0, 5, "acme's connections closed")
        assert register("us.gym.test").status_code == 409  # us unaffected (already there)

        run_sql(control, "UPDATE control.tenants SET status = 'active' WHERE slug = 'acme'")
        time.sleep(0.1)
        again = register("acme.gym.test")
        assert again.status_code == 409, again.text  # served again: the member is there


def test_bibikos_multi_tenant_setting_alone_routes_by_tenant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bibikos_api.main import default_database

    monkeypatch.delenv("BIBIKOS_TENANT_URLS", raising=False)
    monkeypatch.setenv("BIBIKOS_DB_MULTI_TENANT", "true")
    bibikos_db.CONFIG.reset()
    try:
        assert default_database() is bibikos_db.tenant_database
    finally:
        monkeypatch.undo()
        bibikos_db.CONFIG.reset()
    assert default_database() is bibikos_db.database


def test_bibikos_super_admin_api_provisions_a_tenant_database_served_at_once(
    bibikos: dict[str, URL], tmp_path: Path, postgres_server: Any
) -> None:
    """The same /admin API on bibikos_api: a tenant created over HTTP gets its own database
    on the control server, is served through its new domain without a restart, and the
    audit names the admin."""
    from db_kit.tenancy.admin import TenantAdmin

    control = bibikos["control"]
    slug = f"gym{uuid.uuid4().hex[:8]}"
    postgres_server.created.append(f"tenant_{slug}")
    token = TenantAdmin(bibikos_db.CONFIG, actor="test", url=control).add_super_admin(
        "ops@example.com"
    )
    env = {
        **os.environ,
        "BIBIKOS_DATABASE_URL": url_string(control),
        "BIBIKOS_TENANT_URLS": "{}",
        "BIBIKOS_DB_MULTI_TENANT": "true",
    }
    admin = {"Authorization": f"Bearer {token}"}
    body = {"email": "member@example.com", "password": "long enough 1"}
    with uvicorn("bibikos_api.main:create_app", env, tmp_path / "uvicorn.log") as base:
        assert httpx.get(f"{base}/admin/tenants", timeout=30).status_code == 401
        created = httpx.post(
            f"{base}/admin/tenants", json={"slug": slug, "name": "Gym"}, headers=admin, timeout=60
        )
        assert created.status_code == 201, created.text
        assert created.json()["status"] == "active"
        domain = httpx.post(
            f"{base}/admin/tenants/{slug}/domains",
            json={"domain": f"{slug}.gym.test"},
            headers=admin,
            timeout=30,
        )
        assert domain.status_code in (200, 201), domain.text
        registered = httpx.post(
            f"{base}/auth/register", json=body, headers={"Host": f"{slug}.gym.test"}, timeout=30
        )
        assert registered.status_code == 201, registered.text
        assert users(control.set(database=f"tenant_{slug}")) == 1
        audit = httpx.get(f"{base}/admin/audit", params={"tenant": slug}, headers=admin).json()
    actions = [(e["action"], e["actor"]) for e in audit]
    assert ("create", "admin:ops@example.com") in actions
    assert ("domain_add", "admin:ops@example.com") in actions
