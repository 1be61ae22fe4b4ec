"""bibikos_api with one database per tenant, routed by host, over real HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from harness import LiveServer
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

import bibikos_db
from bibikos_api.main import BibikosApiRouting, create_app
from db_kit.tenancy import StaticTenantUrlResolver, TenantRoutedDatabase
from db_tools.testing import unused_port

BODY = {"email": "same@example.com", "password": "long enough 1"}


def users(url: URL) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM auth_users")).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
def tenant_urls(database_at_head: Callable[..., URL]) -> dict[str, URL]:
    return {"us": database_at_head(bibikos_db.CONFIG), "eu": database_at_head(bibikos_db.CONFIG)}


@pytest.fixture
def base(tenant_urls: dict[str, URL]) -> Iterator[str]:
    down = URL.create("postgresql+psycopg", username="u", password="pw", host="127.0.0.1",
                      port=unused_port(), database="gone")  # fmt: skip
    resolver = StaticTenantUrlResolver({**tenant_urls, "down": down})
    database = TenantRoutedDatabase(bibikos_db.CONFIG, resolver=resolver)
    routing = BibikosApiRouting(
        tenant_hosts={"us": ["us.gym.test"], "eu": ["eu.gym.test"], "down": ["down.gym.test"]}
    )
    with LiveServer(create_app(database, routing)) as base_url:
        yield base_url


def test_hosts_route_to_their_own_database(base: str, tenant_urls: dict[str, URL]) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        for host in ("us.gym.test", "eu.gym.test"):
            r = client.post("/auth/register", json=BODY, headers={"Host": host})
            assert r.status_code == 201, r.text
        login = client.post("/auth/login", json=BODY, headers={"Host": "us.gym.test"})
        bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
        assert client.get("/auth/me", headers={"Host": "us.gym.test", **bearer}).status_code == 200
        assert client.get("/auth/me", headers={"Host": "eu.gym.test", **bearer}).status_code == 401
        assert client.get("/auth/me", headers={"Host": "asia.gym.test"}).status_code == 404
    assert (users(tenant_urls["us"]), users(tenant_urls["eu"])) == (1, 1)


def test_one_tenant_database_down_is_503_for_that_tenant_only(base: str) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        down = client.post("/auth/register", json=BODY, headers={"Host": "down.gym.test"})
        assert down.status_code == 503
        assert down.headers["Retry-After"]
        for host in ("us.gym.test", "eu.gym.test"):
            r = client.post("/auth/register", json=BODY, headers={"Host": host})
            assert r.status_code == 201, r.text


def test_ready_reports_the_unhealthy_tenant_without_failing_the_healthy_ones(base: str) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        r = client.get("/health/ready")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "degraded"
    assert body["tenants"] == {"us": "ok", "eu": "ok", "down": "database_unavailable"}
    assert set(body) == {"status", "tenants"}
    # No host, port, database name or exception text reaches an anonymous caller.
    for secret in ("127.0.0.1", "gone", "pw", "PostgreSQL", "reach"):
        assert secret not in r.text


def test_ready_is_503_when_every_tenant_database_is_down() -> None:
    down = URL.create("postgresql+psycopg", username="u", password="pw", host="127.0.0.1",
                      port=unused_port(), database="gone")  # fmt: skip
    database = TenantRoutedDatabase(
        bibikos_db.CONFIG, resolver=StaticTenantUrlResolver({"a": down, "b": down})
    )
    routing = BibikosApiRouting(tenant_hosts={"a": ["a.gym.test"], "b": ["b.gym.test"]})
    with (
        LiveServer(create_app(database, routing)) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):
        r = client.get("/health/ready")
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"]
    assert r.json() == {
        "status": "unavailable",
        "reason": "database_unavailable",
        "tenants": {"a": "database_unavailable", "b": "database_unavailable"},
    }
    assert "127.0.0.1" not in r.text
    assert "gone" not in r.text
