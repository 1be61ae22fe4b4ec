"""my_api multi-tenant by configuration: subdomain -> tenant schema, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from harness import LiveServer
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

import core_db
from api_kit import tenant_routing
from core_db.config import REGISTRY
from db_kit.database import SQLAlchemyDatabase
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.schema_tenants import SchemaTenantMigrator
from db_shared import ConfigurationError
from my_api.main import MyApiRouting, create_app

BODY = {"email": "same@example.com", "password": "long enough 1"}


def count(url: URL, schema: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {schema}.auth_users")).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
def tenants_url(fresh_database: Callable[..., URL]) -> URL:
    url = fresh_database("tenant_http")
    Migrator(REGISTRY, url).upgrade()
    Migrator(core_db.CONFIG, url).upgrade()
    for slug in ("acme", "globex"):
        SchemaTenantMigrator(core_db.CONFIG, url).create(slug)
    return url


@pytest.fixture
def base(tenants_url: URL) -> Iterator[str]:
    database = SQLAlchemyDatabase(core_db.CONFIG, url=tenants_url, multi_tenant=True)
    app = create_app(database, MyApiRouting(tenant_base_domain="example.test"))
    with LiveServer(app) as base_url:
        yield base_url


def on(tenant: str) -> dict[str, str]:
    return {"Host": f"{tenant}.example.test"}


def test_subdomains_route_to_their_own_schema(base: str, tenants_url: URL) -> None:
    with httpx.Client(base_url=base) as client:
        for tenant in ("acme", "globex"):
            assert client.post("/auth/register", json=BODY, headers=on(tenant)).status_code == 201
        # The same email registers once per tenant, and a duplicate is caught per tenant.
        assert client.post("/auth/register", json=BODY, headers=on("acme")).status_code == 409
        token = client.post("/auth/login", json=BODY, headers=on("acme")).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert client.get("/auth/me", headers={**on("acme"), **bearer}).status_code == 200
        # acme's session token means nothing in globex.
        assert client.get("/auth/me", headers={**on("globex"), **bearer}).status_code == 401
    assert (count(tenants_url, "tenant_acme"), count(tenants_url, "tenant_globex")) == (1, 1)
    assert count(tenants_url, "public") == 0


@pytest.mark.parametrize(
    "host",
    ["nope.example.test", "example.test", 'x";DROP SCHEMA core;--.example.test', "pg_catalog.example.test",
     "a.b.example.test", "acme.example.test.evil.org", "other.org"],
)  # fmt: skip
def test_unknown_or_malicious_hosts_are_404_json(base: str, tenants_url: URL, host: str) -> None:
    response = httpx.get(f"{base}/auth/me", headers={"Host": host})
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_tenant"
    assert httpx.get(f"{base}/health/live", headers={"Host": host}).status_code == 200
    engine = create_engine(tenants_url)
    with engine.connect() as conn:
        schemas = set(conn.execute(text("SELECT nspname FROM pg_namespace")).scalars())
    engine.dispose()
    assert "core" in schemas


def test_interleaved_concurrent_requests_never_cross(base: str) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            tokens = {}
            for tenant in ("acme", "globex"):
                body = {"email": f"owner@{tenant}.example", "password": "long enough 1"}
                assert (
                    await client.post("/auth/register", json=body, headers=on(tenant))
                ).status_code == 201
                login = await client.post("/auth/login", json=body, headers=on(tenant))
                tokens[tenant] = login.json()["access_token"]

            async def me(i: int) -> None:
                tenant = ("acme", "globex")[i % 2]
                headers = {**on(tenant), "Authorization": f"Bearer {tokens[tenant]}"}
                response = await client.get("/auth/me", headers=headers)
                assert response.status_code == 200, response.text
                assert response.json()["email"] == f"owner@{tenant}.example"

            await asyncio.gather(*(me(i) for i in range(100)))

    asyncio.run(scenario())


class _StaticDirectory:
    """A tenant directory with no registry domains (a custom one, as a user may write)."""

    multi_tenant = True

    async def tenant_exists(self, slug: str) -> bool:
        return slug == "acme"


def test_multi_tenant_without_any_routing_is_a_start_up_error() -> None:
    # A registry's domains are routing enough (test_tenant_registry_routing); a directory
    # without them and no routing variables cannot route anything: refused at start-up.
    with pytest.raises(ConfigurationError) as info:
        tenant_routing(_StaticDirectory(), MyApiRouting())
    assert "MY_API_TENANT_BASE_DOMAIN" in str(info.value)


def test_explicit_host_or_header_wins_over_the_default(tenants_url: URL) -> None:
    database = SQLAlchemyDatabase(core_db.CONFIG, url=tenants_url, multi_tenant=True)
    routing = MyApiRouting(
        tenant_hosts={"acme": ["acme.test"]}, tenant_default="globex", tenant_header="X-Tenant"
    )
    app = create_app(database, routing)

    def register(email: str, **headers: str) -> int:
        return client.post(
            "/auth/register", json={**BODY, "email": email}, headers=headers
        ).status_code

    with LiveServer(app) as base_url, httpx.Client(base_url=base_url) as client:
        assert register("header@example.com", **{"X-Tenant": "acme"}) == 201
        assert register("host@example.com", Host="acme.test") == 201
        assert register("default@example.com") == 201  # neither names a tenant
        assert register("other-host@example.com", Host="elsewhere.test") == 201
        # An explicit but unknown or invalid header is refused, never the default.
        for bad in ("nope", "Bad!", "", "pg_catalog"):
            refused = client.post("/auth/register", json=BODY, headers={"X-Tenant": bad})
            assert refused.status_code == 404, bad
            assert refused.json()["code"] == "unknown_tenant"
        twice = client.post(
            "/auth/register", json=BODY, headers=[("X-Tenant", "acme"), ("X-Tenant", "globex")]
        )
        assert twice.status_code == 404
    assert (count(tenants_url, "tenant_acme"), count(tenants_url, "tenant_globex")) == (2, 2)


# --- identity sync webhook --------------------------------------------------------------

SECRET = "whsec-test-1"


def signed(event: dict[str, object], secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    from auth.webhooks import sign

    body = json.dumps(event).encode()
    headers = sign(secret, str(event.get("id", "evt")), int(time.time()), body)
    return body, {**headers, "content-type": "application/json"}


def event(
    kind: str, tenant: str = "acme", email: str = "ext@example.com", **data: object
) -> dict[str, object]:
    return {
        "id": f"evt-{kind}-{email}",
        "type": f"identity.{kind}",
        "tenant_id": tenant,
        "data": {"id": "ext-42", "email": email, **data},
    }


def users(url: URL, schema: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [
                tuple(r)
                for r in conn.execute(
                    text(
                        f"SELECT email, username, is_active, updated_at FROM {schema}.auth_users ORDER BY id"
                    )
                )
            ]
    finally:
        engine.dispose()


def count_events(url: URL, schema: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            query = text(f"SELECT count(*) FROM {schema}.auth_webhook_events")
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
def webhook_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AUTH_WEBHOOK_SECRET", SECRET)
    return SECRET


def test_identity_events_upsert_idempotently_into_their_tenant(
    base: str, tenants_url: URL, webhook_secret: str
) -> None:
    url = f"{base}/auth/webhooks/identity"
    body, headers = signed(event("created", username="ext_user"))
    assert httpx.post(url, content=body, headers=headers).status_code == 200
    first = users(tenants_url, "tenant_acme")
    assert [(e, u, a) for e, u, a, _ in first] == [("ext@example.com", "ext_user", True)]
    assert users(tenants_url, "tenant_globex") == []

    # A replay changes nothing, not even updated_at.
    replay = httpx.post(url, content=body, headers=headers)
    assert replay.status_code == 200
    assert replay.json()["status"] == "duplicate"
    assert users(tenants_url, "tenant_acme") == first

    body, headers = signed(event("updated", email="new@example.com"))
    assert httpx.post(url, content=body, headers=headers).status_code == 200
    assert [r[0] for r in users(tenants_url, "tenant_acme")] == ["new@example.com"]

    body, headers = signed(event("deleted", email="new@example.com"))
    for _ in range(2):
        assert httpx.post(url, content=body, headers=headers).status_code == 200
    assert [r[2] for r in users(tenants_url, "tenant_acme")] == [False]
    # Each tenant remembers the event ids it received; globex received none.
    assert count_events(tenants_url, "tenant_acme") == 3
    assert count_events(tenants_url, "tenant_globex") == 0

    # The same event id in another tenant is that tenant's first delivery.
    body, headers = signed(event("created", tenant="globex"))
    assert httpx.post(url, content=body, headers=headers).json()["status"] == "applied"
    assert [r[0] for r in users(tenants_url, "tenant_globex")] == ["ext@example.com"]


def test_identity_webhook_refusals(base: str, tenants_url: URL, webhook_secret: str) -> None:
    url = f"{base}/auth/webhooks/identity"
    body, headers = signed(event("created"))
    bad = {**headers, "webhook-signature": "v1," + "A" * 44}
    assert httpx.post(url, content=body, headers=bad).status_code == 401
    wrong_secret = signed(event("created"), secret="another")[1]
    assert httpx.post(url, content=body, headers=wrong_secret).status_code == 401
    assert (
        httpx.post(url, content=body, headers={"content-type": "application/json"}).status_code
        == 401
    )

    for tenant in ("nope", 'x";DROP SCHEMA core;--', "pg_catalog"):
        body, headers = signed(event("created", tenant=tenant))
        response = httpx.post(url, content=body, headers=headers)
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "unknown_tenant"

    body, headers = signed({"type": "identity.created"})
    assert httpx.post(url, content=body, headers=headers).status_code == 422
    assert users(tenants_url, "tenant_acme") == []
    assert users(tenants_url, "tenant_globex") == []


def test_identity_webhook_tenant_database_down_is_503(
    webhook_secret: str, tmp_path: object
) -> None:
    import tempfile
    from pathlib import Path

    from sqlalchemy.engine import make_url

    from db_tools.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="db_kit_webhook_")))
    try:
        server.start()
        url = make_url(server.ensure_database("hooks"))
        Migrator(REGISTRY, url).upgrade()
        Migrator(core_db.CONFIG, url).upgrade()
        SchemaTenantMigrator(core_db.CONFIG, url).create("acme")
        database = SQLAlchemyDatabase(core_db.CONFIG, url=url, multi_tenant=True)
        app = create_app(database, MyApiRouting(tenant_base_domain="example.test"))
        with LiveServer(app) as base_url:
            body, headers = signed(event("created"))
            assert (
                httpx.post(
                    f"{base_url}/auth/webhooks/identity", content=body, headers=headers
                ).status_code
                == 200
            )
            server.stop()
            down = httpx.post(f"{base_url}/auth/webhooks/identity", content=body, headers=headers)
            assert down.status_code == 503  # the sender retries later
            assert down.headers["Retry-After"]
    finally:
        server.destroy()


def test_ready_lists_unhealthy_tenant_schemas_and_stays_up(base: str, tenants_url: URL) -> None:
    with httpx.Client(base_url=base) as client:
        healthy = client.get("/health/ready")
        assert healthy.status_code == 200, healthy.text
        assert healthy.json()["tenants"] == {"acme": "ok", "globex": "ok"}
        engine = create_engine(tenants_url)
        with engine.begin() as conn:
            conn.execute(text("UPDATE core.tenants SET last_error = 'boom' WHERE slug = 'globex'"))
        engine.dispose()
        degraded = client.get("/health/ready")
        # acme still serves; globex is reported, and the instance stays ready.
        assert degraded.status_code == 200, degraded.text
        assert degraded.json()["status"] == "degraded"
        assert degraded.json()["tenants"] == {"acme": "ok", "globex": "migration_failed"}
        assert "boom" not in degraded.text  # the raw error stays in the server's log
        assert "tenant_globex" not in degraded.text
        assert client.post("/auth/register", json=BODY, headers=on("acme")).status_code == 201
