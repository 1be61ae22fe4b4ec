"""Database-per-tenant read sessions on streaming replicas, on real servers
(``db_tools.fleet_testing``: primary pg1 and a streaming replica of it, which holds every
database of pg1).

Which server answered is proven with ``pg_is_in_recovery()`` inside the read session.
Marked ``slow``: each test starts a replica (a base backup, ~5 s).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

import bibikos_db
from bibikos_db import BibikosSettings
from db_kit.replicas import SAMPLE_INTERVAL
from db_kit.tenancy import TenantRoutedDatabase
from db_shared.positions import position_context
from db_shared.tenancy import tenant_context
from db_tools.fleet_testing import PostgresFleet, ReplicaServer

pytest_plugins = ["db_tools.fleet_testing"]
pytestmark = pytest.mark.slow

MAX_LAG_MS = 300


@pytest.fixture
def tenant_urls(pg_fleet: PostgresFleet) -> Iterator[dict[str, URL]]:
    """Two tenant databases on pg1, each with a ``notes`` table."""
    pg1 = pg_fleet["pg1"]
    urls = {slug: pg1.create_database(f"tr_{slug}") for slug in ("a", "b")}
    for url in urls.values():
        assert url.database is not None
        pg1.scalar("CREATE TABLE notes (id serial PRIMARY KEY, body text)", database=url.database)
    yield urls
    for url in urls.values():
        pg1.drop_database(url)


def _database(
    pg_fleet: PostgresFleet, replica: ReplicaServer, urls: dict[str, URL]
) -> TenantRoutedDatabase:
    """Tenants in the static map, ``BIBIKOS_DB_SERVERS`` naming pg1 and its replica."""
    control = pg_fleet["pg1"].url("postgres").render_as_string(hide_password=False)
    servers = {
        "pg1": {
            "primary": control,
            "replicas": [replica.url("postgres").render_as_string(hide_password=False)],
            "max_lag_ms": MAX_LAG_MS,
        }
    }
    settings = BibikosSettings(
        url=control,
        servers=json.dumps(servers),
        tenant_urls={s: u.render_as_string(hide_password=False) for s, u in urls.items()},  # type: ignore[arg-type]
        tenant_max_engines=4,
        tenant_connection_budget=16,
        environment="test",
    )
    return TenantRoutedDatabase(bibikos_db.CONFIG, settings=settings)


async def _write(db: TenantRoutedDatabase, tenant: str, body: str) -> None:
    with tenant_context(tenant):
        async with db.session() as s:
            await s.execute(text("INSERT INTO notes (body) VALUES (:b)"), {"b": body})


async def _read(db: TenantRoutedDatabase, tenant: str, body: str) -> tuple[bool, bool]:
    """(whether a replica answered, whether it sees ``body``)."""
    with tenant_context(tenant):
        async with db.read_session() as s:
            on_replica, seen = (
                await s.execute(
                    text(
                        "SELECT pg_is_in_recovery(), EXISTS (SELECT 1 FROM notes WHERE body = :b)"
                    ),
                    {"b": body},
                )
            ).one()
    return on_replica, seen


async def _settled() -> None:
    await asyncio.sleep(SAMPLE_INTERVAL * 1.5)


async def _until_replica(db: TenantRoutedDatabase, tenant: str, body: str) -> bool:
    """Read until the replica serves (first samples may not know its lag yet); what it saw."""
    deadline = time.monotonic() + 10
    while True:
        on_replica, seen = await _read(db, tenant, body)
        if on_replica:
            return seen
        assert time.monotonic() < deadline, "the replica never served the tenant's reads"
        await _settled()


def test_tenant_reads_use_the_replica_and_read_their_writes(
    pg_fleet: PostgresFleet, pg_replica: ReplicaServer, tenant_urls: dict[str, URL]
) -> None:
    db = _database(pg_fleet, pg_replica, tenant_urls)

    async def scenario() -> None:
        try:
            with position_context():
                assert await _until_replica(db, "a", "none") is False
                assert await _until_replica(db, "b", "none") is False

            pg_replica.pause_replay()
            # A write in tenant A, then reads in the same context: the replica has not
            # replayed it, so the primary serves them, and A sees its row.
            with position_context() as request:
                await _write(db, "a", "a-first")
                carried = request.required
                assert carried is not None  # tenant writes record the WAL position
                for _ in range(3):
                    assert await _read(db, "a", "a-first") == (False, True)
                    # Tenant B, same context: never A's rows (its own database).
                    assert (await _read(db, "b", "a-first"))[1] is False
                    await asyncio.sleep(SAMPLE_INTERVAL / 2)

            pg_replica.resume_replay()
            pg_replica.catch_up()
            await _settled()
            with position_context(carried):
                assert await _until_replica(db, "a", "a-first") is True
                assert await _until_replica(db, "b", "a-first") is False
            with position_context():
                assert await _read(db, "a", "a-first") == (True, True)
                assert await _read(db, "b", "a-first") == (True, False)
        finally:
            await db.dispose()

    try:
        asyncio.run(scenario())
    finally:
        if pg_replica.replay_paused():
            pg_replica.resume_replay()


def test_a_stopped_replica_sends_tenant_reads_to_the_primary(
    pg_fleet: PostgresFleet, pg_replica: ReplicaServer, tenant_urls: dict[str, URL]
) -> None:
    db = _database(pg_fleet, pg_replica, tenant_urls)

    async def scenario() -> None:
        try:
            await _write(db, "a", "kept")
            pg_replica.catch_up()
            assert await _until_replica(db, "a", "kept") is True
            pg_replica.stop()
            for _ in range(3):  # at once and after new samples: the primary, no error
                assert await _read(db, "a", "kept") == (False, True)
                assert await _read(db, "b", "kept") == (False, False)
                await _settled()
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_tenant_replica_engines_share_the_slot_budget(
    pg_fleet: PostgresFleet, pg_replica: ReplicaServer, tenant_urls: dict[str, URL]
) -> None:
    """Replica pools live in the tenant's cache slot, inside its share of the budget; a
    tenant on another server gets none."""
    db = _database(pg_fleet, pg_replica, tenant_urls)
    cache = db.cache
    assert cache.per_tenant_connections <= cache.connection_budget // cache.max_engines
    other = tenant_urls["a"].set(port=pg_fleet["pg2"].port)
    settings = db.settings

    def no_primary() -> None:
        raise AssertionError("not sampled")

    assert db._tenant_replicas(other, settings, no_primary) is None  # type: ignore[arg-type]

    async def scenario() -> None:
        try:
            async with cache.lease_with_replicas("a") as (engines, replicas):
                assert replicas is not None
                (replica,) = replicas.replicas
                assert replica.url.database == tenant_urls["a"].database
                assert replica.url.port == pg_replica.port
                pool = replica.engine.sync_engine.pool
                async_pool = engines.async_engine.sync_engine.pool
                sizes = pool.size() + async_pool.size() + engines.sync_engine.pool.size()  # type: ignore[attr-defined]
                assert sizes <= cache.per_tenant_connections
            await db.cleanup("a")
            assert cache.stats().live == ()
        finally:
            await db.dispose()

    asyncio.run(scenario())
