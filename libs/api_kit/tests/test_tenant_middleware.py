"""TenantMiddleware under real uvicorn: every request runs for its own tenant, or gets 404."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.requests import HTTPConnection
from harness import LiveServer  # tests/api/harness.py (on pytest's pythonpath)

from api_kit import (
    CallableResolver,
    CurrentTenantDep,
    FirstMatch,
    HeaderResolver,
    HostMapResolver,
    SubdomainResolver,
    TenantMiddleware,
    TenantResolver,
    TenantRouting,
    create_api,
)
from db_shared import (
    DatabaseUnavailableError,
    Tenant,
    UnknownTenantError,
    current_tenant,
    current_tenant_or_none,
)

pytestmark = pytest.mark.slow

UNKNOWN = {"code": "unknown_tenant", "detail": "No tenant is served at this address."}
REGION_HOSTS = {
    "us": ["app.example.com", "*.us.example.com"],
    "eu": ["app.example.eu", "*.eu.example.com"],
}
EXEMPT = ("/health/live", "/docs", "/openapi.json", "/redoc", "/probe", "/public")
# Requests inside /slow right now and at most (one server loop at a time updates it).
IN_FLIGHT = {"now": 0, "peak": 0}


def slug_or_none() -> str | None:
    found = current_tenant_or_none()
    return None if found is None else found.slug


async def slug_after_a_nap() -> str:
    await asyncio.sleep(random.random() / 100)
    return current_tenant().slug


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/whoami")
    async def whoami() -> dict[str, str | None]:
        tenant = current_tenant()
        return {"slug": tenant.slug, "region": tenant.region}

    @router.get("/whoami-sync")
    def whoami_sync() -> dict[str, str]:
        # Sync routes run in the threadpool, which copies the context.
        return {"slug": current_tenant().slug}

    @router.get("/dep")
    async def dep(tenant: CurrentTenantDep) -> dict[str, str]:
        return {"slug": tenant.slug}

    @router.get("/probe")
    async def probe() -> dict[str, str | None]:
        return {"slug": slug_or_none()}

    @router.get("/public/needs-tenant")
    async def needs_tenant(tenant: CurrentTenantDep) -> dict[str, str]:
        return {"slug": tenant.slug}

    @router.get("/slow")
    async def slow() -> dict[str, str]:
        IN_FLIGHT["now"] += 1
        IN_FLIGHT["peak"] = max(IN_FLIGHT["peak"], IN_FLIGHT["now"])
        before = current_tenant().slug
        await asyncio.sleep(random.random() / 50)
        in_task = await asyncio.create_task(slug_after_a_nap())
        (gathered,) = await asyncio.gather(slug_after_a_nap())
        in_thread = await asyncio.to_thread(lambda: current_tenant().slug)
        await asyncio.sleep(random.random() / 50)
        IN_FLIGHT["now"] -= 1
        return {
            "before": before,
            "task": in_task,
            "gathered": gathered,
            "thread": in_thread,
            "after": current_tenant().slug,
        }

    return router


def build_app(resolver: TenantResolver, **options: Any) -> FastAPI:
    return create_api(
        name="tenancy-test",
        binders=[],
        routers=[build_router()],
        requires=(),
        tenancy=TenantRouting(resolver=resolver, exempt_paths=EXEMPT, **options),
    )


@pytest.fixture
def serve() -> Iterator[Callable[..., httpx.Client]]:
    """Factory: serve the test app behind ``TenantMiddleware(resolver)``; a client to it."""
    running: list[tuple[LiveServer, httpx.Client]] = []

    def start(resolver: TenantResolver, **options: Any) -> httpx.Client:
        live = LiveServer(build_app(resolver, **options))
        client = httpx.Client(base_url=live.__enter__(), timeout=30)
        running.append((live, client))
        return client

    yield start
    for live, client in reversed(running):
        client.close()
        live.__exit__()


def tenant_at(client: httpx.Client, path: str = "/whoami", **headers: str) -> str:
    r = client.get(path, headers=headers)
    assert r.status_code == 200, r.text
    slug: str = r.json()["slug"]
    return slug


def assert_unknown(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert {k: v for k, v in response.json().items() if k in UNKNOWN} == UNKNOWN
    assert response.json()["status"] == 404


# --- resolvers ----------------------------------------------------------------------------


def test_host_map_us_eu_with_wildcards_ports_and_default(
    serve: Callable[..., httpx.Client],
) -> None:
    client = serve(HostMapResolver(REGION_HOSTS, default="us"))
    assert tenant_at(client, Host="app.example.com") == "us"
    assert tenant_at(client, Host="app.example.eu") == "eu"
    assert tenant_at(client, Host="app.example.eu:8443") == "eu"
    assert tenant_at(client, Host="APP.Example.EU") == "eu"
    assert tenant_at(client, Host="app.example.eu.") == "eu"
    assert tenant_at(client, Host="acme.eu.example.com") == "eu"
    assert tenant_at(client, Host="a.b.us.example.com:80") == "us"
    # The wildcard needs a label: the bare parent is not in the list; the default answers.
    assert tenant_at(client, Host="eu.example.com") == "us"
    assert tenant_at(client, Host="elsewhere.org") == "us"
    assert tenant_at(client) == "us"  # httpx sends Host: 127.0.0.1:<port>
    assert tenant_at(client, "/whoami-sync", Host="app.example.eu") == "eu"
    assert tenant_at(client, "/dep", Host="app.example.eu") == "eu"


def test_host_map_without_default_refuses_unknown_hosts(
    serve: Callable[..., httpx.Client],
) -> None:
    client = serve(HostMapResolver(REGION_HOSTS))
    assert tenant_at(client, Host="x.us.example.com") == "us"
    assert_unknown(client.get("/whoami", headers={"Host": "elsewhere.org"}))
    assert_unknown(client.get("/whoami"))
    assert_unknown(client.get("/whoami", headers={"Host": "app.example.com:http"}))
    assert_unknown(client.get("/no-such-route", headers={"Host": "elsewhere.org"}))


def test_host_map_refuses_a_bad_configuration() -> None:
    with pytest.raises(ValueError, match="listed for 'us' and 'eu'"):
        HostMapResolver({"us": ["app.example.com"], "eu": ["APP.example.com"]})
    with pytest.raises(TypeError, match="list of patterns"):
        HostMapResolver({"us": "app.example.com"})
    with pytest.raises(ValueError, match="reserved"):
        HostMapResolver({"public": ["app.example.com"]})
    with pytest.raises(ValueError, match="lower-case"):
        HostMapResolver(REGION_HOSTS, default="US")


def test_subdomain(serve: Callable[..., httpx.Client]) -> None:
    client = serve(SubdomainResolver(base_domain="example.com"))
    assert tenant_at(client, Host="acme.example.com") == "acme"
    assert tenant_at(client, Host="Globex.Example.com:8000") == "globex"
    for host in (
        "example.com",  # apex
        "a.b.example.com",  # multi-level
        "www.example.com",  # excluded
        "acme.example.org",
        "acmeexample.com",
        "acme-corp.example.com",  # a valid host name but no valid slug
        "pg_catalog.example.com",
        "public.example.com",
    ):
        assert_unknown(client.get("/whoami", headers={"Host": host}))


def test_header(serve: Callable[..., httpx.Client]) -> None:
    client = serve(HeaderResolver("X-Tenant"))
    assert tenant_at(client, **{"X-Tenant": "acme"}) == "acme"
    assert tenant_at(client, **{"x-tenant": "globex"}) == "globex"
    assert_unknown(client.get("/whoami"))
    assert_unknown(client.get("/whoami", headers=[("X-Tenant", "acme"), ("X-Tenant", "globex")]))


def test_custom_async_resolver_and_known_hook(serve: Callable[..., httpx.Client]) -> None:
    registry = {"tenant-one.test": Tenant("one", region="eu", data={"plan": "pro"})}
    checked: list[str] = []

    async def lookup(connection: HTTPConnection) -> Tenant | None:
        await asyncio.sleep(0)
        return registry.get(connection.url.hostname or "")

    async def known(tenant: Tenant) -> bool:
        await asyncio.sleep(0)
        checked.append(tenant.slug)
        return tenant.slug != "suspended"

    client = serve(
        FirstMatch(HeaderResolver(), CallableResolver(lookup)),
        known=known,
    )
    r = client.get("/whoami", headers={"Host": "tenant-one.test"})
    assert r.json() == {"slug": "one", "region": "eu"}
    assert tenant_at(client, **{"X-Tenant": "acme", "Host": "tenant-one.test"}) == "acme"
    assert_unknown(client.get("/whoami", headers={"Host": "nobody.test"}))
    assert_unknown(client.get("/whoami", headers={"X-Tenant": "suspended"}))
    assert checked == ["one", "acme", "suspended"]


def test_sync_resolver_returning_a_slug(serve: Callable[..., httpx.Client]) -> None:
    client = serve(CallableResolver(lambda connection: connection.query_params.get("t")))
    assert tenant_at(client, "/whoami?t=acme") == "acme"
    assert_unknown(client.get("/whoami?t=a,public"))
    assert_unknown(client.get("/whoami"))


def test_resolver_and_hook_errors_are_answered_not_crashed(
    serve: Callable[..., httpx.Client],
) -> None:
    def unknown(connection: HTTPConnection) -> Tenant:
        raise UnknownTenantError(connection.url.hostname)

    def forged(connection: HTTPConnection) -> Tenant:
        tenant = Tenant("acme")
        object.__setattr__(tenant, "slug", "public")
        return tenant

    async def registry_down(tenant: Tenant) -> bool:
        raise DatabaseUnavailableError("registry unreachable")

    assert_unknown(serve(CallableResolver(unknown)).get("/whoami"))
    assert_unknown(serve(CallableResolver(forged)).get("/whoami"))
    r = serve(HeaderResolver(), known=registry_down).get("/whoami", headers={"X-Tenant": "a"})
    assert r.status_code == 503
    assert r.json()["code"] == "unavailable"
    assert "registry" not in r.text


# --- hostile input ------------------------------------------------------------------------

HOSTILE = [
    'x";DROP SCHEMA core;--',
    "a,public",
    "pg_catalog",
    "public",
    "Acme",
    "a'b",
    "a" * 64,
    "acme\tx",
    "x" * 8000,
]


def test_hostile_headers_get_the_same_404(serve: Callable[..., httpx.Client]) -> None:
    client = serve(FirstMatch(HeaderResolver(), SubdomainResolver("example.com")))
    for value in HOSTILE:
        assert_unknown(client.get("/whoami", headers={"X-Tenant": value}))
    assert_unknown(client.get("/whoami", headers={b"X-Tenant": b"\xff\xfeacme"}))
    # The server still serves good requests afterwards.
    assert tenant_at(client, **{"X-Tenant": "acme"}) == "acme"


def test_hostile_hosts_get_the_same_404(serve: Callable[..., httpx.Client]) -> None:
    hosts = [
        'x";DROP SCHEMA core;--.example.com',
        "a,public.example.com",
        "pg_catalog.example.com",
        "acme.example.com:8000:1",
        "acme.example.com:-1",
        "[::1",
        "[not-ip]:80",
        "acme..example.com",
        "-acme.example.com",
        "x" * 300 + ".example.com",
    ]
    for resolver in (
        SubdomainResolver("example.com"),
        HostMapResolver({"us": ["*"]}),
        HostMapResolver(REGION_HOSTS, default="us"),
    ):
        client = serve(resolver)
        for host in hosts:
            assert_unknown(client.get("/whoami", headers={"Host": host}))
        assert_unknown(client.get("/whoami", headers={b"Host": b"acme\xff.example.com"}))


def test_ipv6_host_literals(serve: Callable[..., httpx.Client]) -> None:
    client = serve(HostMapResolver({"local": ["[::1]", "app?.test"]}))
    assert tenant_at(client, Host="[::1]:8000") == "local"
    assert tenant_at(client, Host="[0:0::1]") == "local"
    assert tenant_at(client, Host="app1.test") == "local"
    assert_unknown(client.get("/whoami", headers={"Host": "[::2]:80"}))
    # "[" is literal: as an fnmatch class "[::1]" would match the one-letter host "1".
    assert_unknown(client.get("/whoami", headers={"Host": "1"}))


# --- exempt paths, dependency, isolation --------------------------------------------------


def test_exempt_paths_need_no_tenant_and_see_none(serve: Callable[..., httpx.Client]) -> None:
    client = serve(HostMapResolver(REGION_HOSTS))
    nowhere = {"Host": "nowhere.invalid"}
    assert client.get("/health/live", headers=nowhere).json() == {"status": "ok"}
    assert client.get("/openapi.json", headers=nowhere).status_code == 200
    assert client.get("/docs", headers=nowhere).status_code == 200
    assert client.get("/probe", headers={"Host": "app.example.eu"}).json() == {"slug": None}
    # Exempt means the path or below it, not any path that starts with the same letters.
    assert_unknown(client.get("/publicity", headers=nowhere))
    # A route that needs a tenant on an exempt path is a wiring mistake: 404, not 500.
    assert_unknown(client.get("/public/needs-tenant", headers={"Host": "app.example.eu"}))
    # Nothing leaks to the next request on the same keep-alive connection.
    assert tenant_at(client, Host="app.example.eu") == "eu"
    assert client.get("/probe").json() == {"slug": None}


def test_two_hundred_concurrent_requests_never_cross_tenants(
    serve: Callable[..., httpx.Client],
) -> None:
    base_url = str(serve(HeaderResolver()).base_url)
    IN_FLIGHT.update(now=0, peak=0)

    async def one(client: httpx.AsyncClient, index: int) -> tuple[str, dict[str, str]]:
        expected = ("acme", "globex")[index % 2]
        r = await client.get("/slow", headers={"X-Tenant": expected})
        assert r.status_code == 200, r.text
        return expected, r.json()

    async def scenario() -> list[tuple[str, dict[str, str]]]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(one(client, i) for i in range(200)))

    results = asyncio.run(scenario())
    assert len(results) == 200
    for expected, seen in results:
        assert set(seen.values()) == {expected}, seen
    # The requests really overlapped inside the handler, so a leak would have shown.
    assert IN_FLIGHT["peak"] >= 20, IN_FLIGHT


# --- ASGI scopes uvicorn's HTTP tests do not reach ----------------------------------------


def test_websocket_without_a_tenant_is_closed_and_lifespan_passes_through() -> None:
    reached: list[tuple[str, str | None]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append((scope["type"], slug_or_none()))

    middleware = TenantMiddleware(app, HeaderResolver())
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    def websocket(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
        return {"type": "websocket", "path": "/ws", "headers": list(headers)}

    async def scenario() -> None:
        await middleware(websocket((b"x-tenant", b"pg_catalog")), receive, send)
        await middleware(websocket(), receive, send)
        await middleware(websocket((b"x-tenant", b"acme")), receive, send)
        await middleware({"type": "lifespan"}, receive, send)

    asyncio.run(scenario())
    assert sent == [{"type": "websocket.close", "code": 1008}] * 2
    assert reached == [("websocket", "acme"), ("lifespan", None)]
