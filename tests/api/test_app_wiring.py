"""How the apps are wired: which database each writes to, start-up checks, outages."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from harness import LiveServer
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

import bibikos_db
import core_db
from api_kit import create_api
from auth.router import router as auth_router
from db_kit.database import SQLAlchemyDatabase
from db_kit.migrations.migrator import Migrator
from db_shared import UnboundTokenError
from db_tools.embedded import EmbeddedPostgres


def count_users(url: URL) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM auth_users")).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
def default_wiring(
    database_at_head: Callable[..., URL], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[URL, URL]]:
    """DATABASE_URL and BIBIKOS_DATABASE_URL point at two fresh migrated databases."""
    core_url, bibikos_url = database_at_head(core_db.CONFIG), database_at_head(bibikos_db.CONFIG)
    monkeypatch.setenv("DATABASE_URL", core_url.render_as_string(hide_password=False))
    monkeypatch.setenv("BIBIKOS_DATABASE_URL", bibikos_url.render_as_string(hide_password=False))
    core_db.CONFIG.reset()
    bibikos_db.CONFIG.reset()
    yield core_url, bibikos_url
    core_db.CONFIG.reset()
    bibikos_db.CONFIG.reset()


def test_each_app_writes_only_to_its_own_database(default_wiring: tuple[URL, URL]) -> None:
    from bibikos_api.main import create_app as create_bibikos
    from my_api.main import create_app as create_my_api

    core_url, bibikos_url = default_wiring
    body = {"email": "same@example.com", "password": "long enough 1"}
    with LiveServer(create_my_api()) as base:
        assert httpx.post(f"{base}/auth/register", json=body).status_code == 201
    assert (count_users(core_url), count_users(bibikos_url)) == (1, 0)

    with LiveServer(create_bibikos()) as base:
        assert httpx.post(f"{base}/auth/register", json=body).status_code == 201
        assert httpx.post(f"{base}/auth/register", json=body).status_code == 409
    assert (count_users(core_url), count_users(bibikos_url)) == (1, 1)


def test_unbound_token_stops_start_up_naming_the_app() -> None:
    app = create_api(name="forgetful_api", binders=[], routers=[auth_router])

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass

    with pytest.raises(UnboundTokenError) as info:
        asyncio.run(start())
    message = str(info.value)
    assert "forgetful_api" in message
    assert "DATABASE" in message
    assert "register_value(DATABASE" in message


@pytest.fixture
def own_server() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL this test may stop and start again."""
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="db_kit_outage_")))
    server.start()
    try:
        yield server
    finally:
        server.destroy()


def test_database_down_gives_503_and_recovers_without_restart(own_server: EmbeddedPostgres) -> None:
    from my_api.main import create_app

    url = make_url(own_server.ensure_database("outage"))
    Migrator(core_db.CONFIG, url).upgrade()
    port = url.port
    assert port is not None
    with LiveServer(create_app(SQLAlchemyDatabase(core_db.CONFIG, url=url))) as base:
        client = httpx.Client(base_url=base, timeout=30)
        body = {"email": "up@example.com", "password": "long enough 1"}
        assert client.post("/auth/register", json=body).status_code == 201
        token = client.post("/auth/login", json=body).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/auth/me", headers=headers).status_code == 200
        assert client.get("/health/ready").json() == {"status": "ok"}

        own_server.stop()
        not_ready = client.get("/health/ready")
        assert not_ready.status_code == 503
        assert not_ready.headers["Retry-After"] == "5"
        # Anonymous callers learn the status and the reason class, never where the database is.
        assert not_ready.json() == {"status": "unavailable", "reason": "database_unavailable"}
        for secret in ("127.0.0.1", str(port), str(url.database), "outage"):
            assert secret not in not_ready.text
        assert client.get("/health/live").status_code == 200
        down = client.get("/auth/me", headers=headers)
        assert down.status_code == 503
        assert down.headers["Retry-After"] == "5"
        assert down.json()["code"] == "unavailable"
        assert down.headers["content-type"] == "application/problem+json"
        assert down.json()["type"] == "https://errors.data-layer.dev/unavailable"
        write = client.post("/auth/register", json={**body, "email": "down@example.com"})
        assert write.status_code == 503

        own_server.start(port=port)
        assert client.get("/health/ready").status_code == 200
        back = client.get("/auth/me", headers=headers)
        assert back.status_code == 200, back.text
        assert (
            client.post("/auth/register", json={**body, "email": "b@example.com"}).status_code
            == 201
        )
        client.close()
    assert count_users(url) == 2


def _routes(router: object) -> list[object]:
    found = []
    for route in getattr(router, "routes", []):
        original = getattr(route, "original_router", None)  # FastAPI's lazily included routers
        found.extend(_routes(original) if original is not None else [route])
    return found


def _dependencies(dependant: object) -> list[object]:
    found = []
    for dep in getattr(dependant, "dependencies", []):
        found.append(dep)
        found.extend(_dependencies(dep))
    return found


@pytest.mark.parametrize("app_name", ["my_api", "bibikos_api"])
def test_no_route_runs_a_dependency_in_the_thread_pool(app_name: str) -> None:
    """A plain ``def`` dependency costs a thread hop per request (the bench saw ~0.2 ms)."""
    import importlib
    import inspect

    config = core_db.CONFIG if app_name == "my_api" else bibikos_db.CONFIG
    app = importlib.import_module(f"{app_name}.main").create_app(SQLAlchemyDatabase(config))
    routes = [r for r in _routes(app.router) if hasattr(r, "dependant")]
    assert len(routes) > 20
    blocking = {
        f"{route.path}: {dep.call}"  # type: ignore[attr-defined]
        for route in routes
        for dep in _dependencies(route.dependant)  # type: ignore[attr-defined]
        if dep.call is not None  # type: ignore[attr-defined]
        and not inspect.iscoroutinefunction(dep.call)  # type: ignore[attr-defined]
        and not inspect.iscoroutinefunction(type(dep.call).__call__)  # type: ignore[attr-defined]
    }
    assert not blocking, sorted(blocking)
