"""Read replicas over HTTP, on real servers (pg1 and a streaming replica of it): the
``X-DB-Position`` header carries read-your-writes from one request to the next, a stopped
replica is skipped (200, served by the primary), and ``/health/ready`` reports replicas.

Which server answered is proven by ``inet_server_port()`` inside the read session.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import APIRouter
from harness import LiveServer
from sqlalchemy import text
from sqlalchemy.engine import URL

import core_db
from api_kit import DatabaseDep, bind_database, create_api
from api_kit.positions import POSITION_HEADER
from core_db.settings import CoreSettings
from db_kit.database import SQLAlchemyDatabase
from db_kit.migrations.migrator import Migrator
from db_kit.replicas import SAMPLE_INTERVAL
from db_shared.positions import parse_lsn
from db_tools.fleet_testing import PostgresFleet, ReplicaServer

pytest_plugins = ["db_tools.fleet_testing"]
pytestmark = pytest.mark.slow

router = APIRouter(prefix="/notes", tags=["notes"])


async def _read(db: DatabaseDep, body: str) -> dict[str, object]:
    async with db.read_session() as s:
        port, seen = (
            await s.execute(
                text("SELECT inet_server_port(), EXISTS (SELECT 1 FROM notes WHERE body = :b)"),
                {"b": body},
            )
        ).one()
    return {"port": port, "seen": seen}


@router.post("/{body}")
async def add_note(db: DatabaseDep, body: str) -> dict[str, object]:
    """Write, then read it back in the same request through a read session."""
    async with db.session() as s:
        await s.execute(text("INSERT INTO notes (body) VALUES (:b)"), {"b": body})
    return await _read(db, body)


@router.get("/{body}")
async def find_note(db: DatabaseDep, body: str) -> dict[str, object]:
    return await _read(db, body)


@pytest.fixture
def primary_url(pg_fleet: PostgresFleet) -> Iterator[URL]:
    pg1 = pg_fleet["pg1"]
    url = pg1.create_database("replica_http")
    assert url.database is not None
    Migrator(core_db.CONFIG, url).upgrade()
    pg1.scalar("CREATE TABLE notes (id serial PRIMARY KEY, body text)", database=url.database)
    yield url
    pg1.drop_database(url)


def _database(primary: URL, replica: ReplicaServer, max_lag_ms: int = 300) -> SQLAlchemyDatabase:
    assert primary.database is not None
    main = primary.render_as_string(hide_password=False)
    servers = {
        "pg1": {
            "replicas": [replica.url(primary.database).render_as_string(hide_password=False)],
            "max_lag_ms": max_lag_ms,
        }
    }
    settings = CoreSettings(url=main, servers=json.dumps(servers), environment="test")
    return SQLAlchemyDatabase(core_db.CONFIG, settings=settings)


def _settle() -> None:
    time.sleep(SAMPLE_INTERVAL * 1.5)


def test_the_position_header_carries_read_your_writes_to_the_next_request(
    pg_fleet: PostgresFleet, pg_replica: ReplicaServer, primary_url: URL
) -> None:
    pg1 = pg_fleet["pg1"]
    app = create_api(
        name="notes", binders=[bind_database(_database(primary_url, pg_replica))], routers=[router]
    )
    with LiveServer(app) as base, httpx.Client(base_url=base) as client:
        _settle()
        first = client.get("/notes/nothing")
        assert first.json() == {"port": pg_replica.port, "seen": False}
        assert POSITION_HEADER not in first.headers  # nothing written, nothing carried

        pg_replica.pause_replay()
        try:
            wrote = client.post("/notes/hello")
            # Same request: the read after the write went to the primary and saw it.
            assert wrote.json() == {"port": pg1.port, "seen": True}
            position = wrote.headers[POSITION_HEADER]
            assert parse_lsn(position) is not None
            # Next request, carrying the position: the primary again, the write seen.
            for _ in range(3):
                echoed = client.get("/notes/hello", headers={POSITION_HEADER: position})
                assert echoed.json() == {"port": pg1.port, "seen": True}
                assert echoed.headers[POSITION_HEADER] == position
                _settle()
            # Garbage is ignored, never an error (too long, wrong shape, lower-case hex ok).
            for bad in ("x" * 5000, "12345/", "G/0", "0/0/0", ""):
                assert client.get("/notes/hello", headers={POSITION_HEADER: bad}).status_code == 200
        finally:
            pg_replica.resume_replay()
        pg_replica.catch_up()
        _settle()
        # Replay caught up: the replica serves the carried position again.
        echoed = client.get("/notes/hello", headers={POSITION_HEADER: position})
        assert echoed.json() == {"port": pg_replica.port, "seen": True}


def test_a_stopped_replica_is_skipped_and_readiness_says_degraded(
    pg_fleet: PostgresFleet, pg_replica: ReplicaServer, primary_url: URL
) -> None:
    from my_api.main import create_app

    database = _database(primary_url, pg_replica)
    pg_replica.catch_up()  # the migration's WAL replayed
    with LiveServer(create_app(database)) as base, httpx.Client(base_url=base) as client:
        # Until a second sample, a replica behind at the first one has no known lag.
        deadline = time.monotonic() + 10
        while (ready := client.get("/health/ready")).json()["status"] != "ok":
            assert time.monotonic() < deadline, ready.text
            _settle()
        assert ready.status_code == 200
        assert ready.json()["replicas"]["pg1_replica_1"]["status"] == "ok"
        assert client.get("/payments/products").status_code == 200

        pg_replica.stop()
        try:
            for _ in range(3):
                products = client.get("/payments/products")
                assert products.status_code == 200, products.text
                _settle()
            ready = client.get("/health/ready")
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded"
            assert ready.json()["replicas"] == {"pg1_replica_1": {"status": "down", "lag_ms": None}}
            assert str(pg_replica.port) not in ready.text
            metrics = client.get("/metrics").text
            assert 'db_read_sessions_total{database="core",target="primary"}' in metrics
            assert (
                'db_replica_skips_total{database="core",reason="down",replica="pg1_replica_1"}'
                in metrics
            )
        finally:
            pg_replica.start()
