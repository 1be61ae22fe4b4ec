"""Failover under a running app, over real HTTP: my_api on a libpq multi-host URL
(``target_session_attrs=read-write``) over a primary and its streaming replica
(``db_tools.fleet_testing``). The primary stops: requests answer 503 + Retry-After and
readiness 503; the replica is promoted: the same process serves writes again, no restart,
and every write acknowledged before the failover is there.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from harness import LiveServer

import core_db
from core_db.settings import CoreSettings
from db_kit.database import SQLAlchemyDatabase
from db_kit.migrations.migrator import Migrator
from db_tools.fleet_testing import FleetServer, PostgresFleet, ReplicaServer, multi_host_url
from my_api.main import create_app

pytest_plugins = ["db_tools.fleet_testing"]
pytestmark = pytest.mark.slow

PASSWORD = "long enough 1"
WRITES = 25


@pytest.fixture
def pair(pg_fleet: PostgresFleet) -> Iterator[tuple[FleetServer, ReplicaServer, str]]:
    """A primary with a migrated core database and a streaming replica of it, their own:
    after a failover the old primary is stale for good."""
    primary = pg_fleet.add_primary(f"failover_http_{uuid.uuid4().hex[:6]}")
    replica: ReplicaServer | None = None
    try:
        url = primary.create_database("failover")
        Migrator(core_db.CONFIG, url).upgrade()
        replica = pg_fleet.add_replica(primary)
        assert url.database is not None
        yield primary, replica, url.database
    finally:
        if replica is not None:
            pg_fleet.remove(replica)
        pg_fleet.remove(primary)


def _register(client: httpx.Client, i: int) -> httpx.Response:
    return client.post("/auth/register", json={"email": f"u{i}@example.com", "password": PASSWORD})


def test_the_app_recovers_from_a_failover_without_restart(
    pair: tuple[FleetServer, ReplicaServer, str],
) -> None:
    primary, replica, database = pair
    url = multi_host_url([primary, replica], database=database, connect_timeout=2)
    settings = CoreSettings(
        url=url.render_as_string(hide_password=False), environment="test", connect_timeout=2
    )
    app = create_app(SQLAlchemyDatabase(core_db.CONFIG, settings=settings))
    with LiveServer(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        acknowledged = [i for i in range(WRITES) if _register(client, i).status_code == 201]
        assert len(acknowledged) == WRITES

        primary.stop()
        during = _register(client, 1000)
        assert during.status_code == 503, during.text
        assert during.headers["Retry-After"].isdigit()
        assert during.json()["code"] == "unavailable"
        not_ready = client.get("/health/ready")
        assert not_ready.status_code == 503
        assert not_ready.headers["Retry-After"].isdigit()

        replica.promote()
        deadline = time.monotonic() + 20
        while (after := _register(client, 1001)).status_code != 201:
            assert after.status_code == 503, after.text
            assert time.monotonic() < deadline, "the app never found the promoted primary"
            time.sleep(0.2)
        assert client.get("/health/ready").status_code == 200
        # No acknowledged write was lost: every user registered before can log in.
        lost = [
            i
            for i in acknowledged
            if client.post(
                "/auth/login", json={"email": f"u{i}@example.com", "password": PASSWORD}
            ).status_code
            != 200
        ]
        assert lost == []
