"""my_api with its tenants on two real servers (``db_tools.fleet_testing``: pg1, the home
server holding the registry, and pg2), over real HTTP: each subdomain's requests run on
its tenant's server; with pg2 down its tenants answer 503 + Retry-After while pg1's
answer 200, ``/health/ready`` says degraded and names pg2; pg2 back, its tenants are
served again by the same process.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from harness import LiveServer
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

import core_db
from core_db.config import REGISTRY
from core_db.settings import CoreSettings
from db_kit.database import SQLAlchemyDatabase
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.schema_tenants import SchemaTenantMigrator
from db_tools.fleet_testing import PostgresFleet, fleet_environment
from my_api.main import MyApiRouting, create_app

pytest_plugins = ["db_tools.fleet_testing"]
pytestmark = pytest.mark.slow

PLACEMENT = {"acme": "pg1", "globex": "pg1", "initech": "pg2", "hooli": "pg2"}
PASSWORD = "long enough 1"


def _sql(url: URL, statement: str, **params: object) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


@dataclass
class Fleet:
    urls: dict[str, URL]
    base: str
    settings: CoreSettings


@pytest.fixture(scope="module")
def fleet(pg_fleet: PostgresFleet) -> Iterator[Fleet]:
    urls = {name: pg_fleet[name].create_database("fleet_http") for name in ("pg1", "pg2")}
    home = urls["pg1"]
    Migrator(REGISTRY, home).upgrade()
    Migrator(core_db.CONFIG, home).upgrade()
    with fleet_environment(core_db.CONFIG, urls):
        for slug, server in PLACEMENT.items():
            SchemaTenantMigrator(core_db.CONFIG).create(slug, server=server)
    servers = {n: {"primary": u.render_as_string(hide_password=False)} for n, u in urls.items()}
    settings = CoreSettings(
        url=home.render_as_string(hide_password=False),
        servers=json.dumps(servers),
        multi_tenant=True,
        environment="test",
        connect_timeout=2,
    )
    database = SQLAlchemyDatabase(core_db.CONFIG, settings=settings)
    app = create_app(database, MyApiRouting(tenant_base_domain="example.test"))
    with LiveServer(app) as base:
        yield Fleet(urls, base, settings)
    for name, url in urls.items():
        pg_fleet[name].drop_database(url)


def on(tenant: str) -> dict[str, str]:
    return {"Host": f"{tenant}.example.test"}


def _users(fleet: Fleet, slug: str) -> list[str]:
    rows = _sql(fleet.urls[PLACEMENT[slug]], f"SELECT email FROM tenant_{slug}.auth_users")
    return sorted(str(row[0]) for row in rows)


def test_requests_run_on_their_tenants_server_and_never_cross(fleet: Fleet) -> None:
    async def scenario() -> dict[str, str]:
        async with httpx.AsyncClient(base_url=fleet.base, timeout=60) as client:
            tokens: dict[str, str] = {}
            for slug in PLACEMENT:
                body = {"email": "owner@example.com", "password": PASSWORD}
                registered = await client.post("/auth/register", json=body, headers=on(slug))
                assert registered.status_code == 201, registered.text
                login = await client.post("/auth/login", json=body, headers=on(slug))
                tokens[slug] = login.json()["access_token"]

            async def me(i: int) -> tuple[str, str, int]:
                slug = list(PLACEMENT)[i % len(PLACEMENT)]
                other = list(PLACEMENT)[(i + 1) % len(PLACEMENT)]
                bearer = {"Authorization": f"Bearer {tokens[slug]}"}
                own = await client.get("/auth/me", headers={**on(slug), **bearer})
                assert own.status_code == 200, own.text
                # A token of one tenant means nothing to another, on any server.
                crossed = await client.get("/auth/me", headers={**on(other), **bearer})
                return slug, own.json()["email"], crossed.status_code

            results = await asyncio.gather(*(me(i) for i in range(120)))
            assert {code for _, _, code in results} == {401}
            return tokens

    asyncio.run(scenario())
    for slug in PLACEMENT:
        # Each tenant's one user is in its own schema on its own server.
        assert _users(fleet, slug) == ["owner@example.com"]
    # The home server holds no schema of pg2's tenants, and pg2 none of pg1's.
    schemas_on_pg1 = {r[0] for r in _sql(fleet.urls["pg1"], "SELECT nspname FROM pg_namespace")}
    assert "tenant_initech" not in schemas_on_pg1
    assert "tenant_acme" in schemas_on_pg1


def test_a_server_down_answers_503_for_its_tenants_only(
    fleet: Fleet, pg_fleet: PostgresFleet
) -> None:
    body = {"email": "down@example.com", "password": PASSWORD}
    with httpx.Client(base_url=fleet.base, timeout=30) as client:
        assert client.get("/health/ready").json()["servers"] == {"pg1": "ok", "pg2": "ok"}
        pg_fleet["pg2"].stop()
        try:
            down = client.post("/auth/register", json=body, headers=on("initech"))
            assert down.status_code == 503, down.text
            assert down.headers["Retry-After"].isdigit()
            assert down.json()["code"] == "unavailable"
            up = client.post("/auth/register", json=body, headers=on("acme"))
            assert up.status_code == 201, up.text
            ready = client.get("/health/ready")
            assert ready.status_code == 200
            answer = ready.json()
            assert answer["status"] == "degraded"
            assert answer["servers"] == {"pg1": "ok", "pg2": "database_unavailable"}
            assert answer["tenants"]["initech"] == "database_unavailable"
            assert answer["tenants"]["acme"] == "ok"
            assert "127.0.0.1" not in ready.text  # reason classes, never hosts
            metrics = client.get("/metrics").text
            assert 'db_server_up{database="core",server="pg2"} 0.0' in metrics
            assert 'db_server_up{database="core",server="pg1"} 1.0' in metrics
        finally:
            pg_fleet["pg2"].start()
        # The same process serves pg2's tenants again, no restart.
        back = client.post("/auth/register", json=body, headers=on("initech"))
        assert back.status_code == 201, back.text
        assert client.get("/health/ready").json()["status"] == "ok"


def test_a_write_to_a_tenant_frozen_for_a_move_is_503_tenant_moving(fleet: Fleet) -> None:
    """What a move's freeze (db_kit.tenancy.moves) does to a request: 503 with Retry-After,
    the code ``tenant_moving``; never a 500. Unfrozen, the write goes through."""
    from db_kit.tenancy.moves import TenantMover

    mover = TenantMover(core_db.CONFIG, settings=fleet.settings)
    place = mover._place("pg2", "tenant_hooli")
    mover._freeze("hooli", place)
    try:
        with httpx.Client(base_url=fleet.base, timeout=30) as client:
            body = {"email": "frozen@example.com", "password": PASSWORD}
            refused = client.post("/auth/register", json=body, headers=on("hooli"))
            assert refused.status_code == 503, refused.text
            assert refused.headers["Retry-After"] == "1"
            assert refused.json()["code"] == "tenant_moving"
            assert client.get("/health/ready").status_code == 200
            mover._unfreeze(place)
            accepted = client.post("/auth/register", json=body, headers=on("hooli"))
            assert accepted.status_code == 201, accepted.text
    finally:
        mover._unfreeze(place)
        mover.close()
