"""Read sessions on streaming replicas, with read-your-writes, on real servers
(``db_tools.fleet_testing``: primary pg1 and a streaming replica of it).

Which server answered is proven with ``inet_server_port()`` inside the read session.
Marked ``slow``: each test starts a replica (a base backup, ~5 s).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

import core_db
from core_db.settings import CoreSettings
from db_kit.database import SQLAlchemyDatabase
from db_kit.replicas import SAMPLE_INTERVAL
from db_shared.positions import format_lsn, position_context, required_position
from db_tools.fleet_testing import FleetServer, PostgresFleet, ReplicaServer

pytest_plugins = ["db_tools.fleet_testing"]
pytestmark = pytest.mark.slow

MAX_LAG_MS = 300
PAIRS = 1000


@pytest.fixture
def primary_url(pg_fleet: PostgresFleet) -> Iterator[URL]:
    """A database on pg1 with a ``notes`` table (created before the replica starts)."""
    pg1 = pg_fleet["pg1"]
    url = pg1.create_database("replicas")
    assert url.database is not None
    pg1.scalar("CREATE TABLE notes (id serial PRIMARY KEY, body text)", database=url.database)
    yield url
    pg1.drop_database(url)


def _settings(primary: URL, replica: FleetServer, **more: object) -> CoreSettings:
    assert primary.database is not None
    servers = {
        "pg1": {
            "primary": primary.render_as_string(hide_password=False),
            "replicas": [replica.url(primary.database).render_as_string(hide_password=False)],
            "max_lag_ms": MAX_LAG_MS,
        }
    }
    return CoreSettings(
        url=primary.render_as_string(hide_password=False),
        servers=json.dumps(servers),
        environment="test",
        **more,
    )


async def _write(db: SQLAlchemyDatabase, body: str) -> None:
    async with db.session() as s:
        await s.execute(text("INSERT INTO notes (body) VALUES (:b)"), {"b": body})


async def _read(db: SQLAlchemyDatabase, body: str) -> tuple[int, bool]:
    """(port that answered, whether it sees ``body``)."""
    async with db.read_session() as s:
        port, seen = (
            await s.execute(
                text("SELECT inet_server_port(), EXISTS (SELECT 1 FROM notes WHERE body = :b)"),
                {"b": body},
            )
        ).one()
    return port, seen


async def _settled(db: SQLAlchemyDatabase) -> None:
    """Let the next read see a fresh sample of the positions."""
    await asyncio.sleep(SAMPLE_INTERVAL * 1.5)


def test_read_session_uses_the_replica_and_reads_your_writes_while_replay_is_paused(
    pg_fleet: PostgresFleet, pg_replica: ReplicaServer, primary_url: URL
) -> None:
    pg1 = pg_fleet["pg1"]
    db = SQLAlchemyDatabase(core_db.CONFIG, settings=_settings(primary_url, pg_replica))

    async def scenario() -> None:
        try:
            # Replay current, nothing required: the replica serves reads.
            with position_context():
                # The first samples may not know the replica's lag yet (a loaded machine).
                deadline = time.monotonic() + 10
                while (await _read(db, "none"))[0] != pg_replica.port:
                    assert time.monotonic() < deadline, "the replica never served reads"
                    await _settled(db)

            pg_replica.pause_replay()
            # Same request: a write, then reads. The replica has not replayed it: primary.
            with position_context() as request:
                await _write(db, "first")
                carried = request.required
                assert carried is not None
                assert request.wrote
                for _ in range(5):
                    assert await _read(db, "first") == (pg1.port, True)
                    await asyncio.sleep(SAMPLE_INTERVAL / 2)  # samples come and go
            # The next request carries the position (the header's job): primary again.
            with position_context(carried):
                assert await _read(db, "first") == (pg1.port, True)
                assert required_position() == carried
            # A request with no position, while the replica is paused past the bound: the
            # replica is lagging, so the primary serves it too.
            await asyncio.sleep(MAX_LAG_MS / 1000 + SAMPLE_INTERVAL * 2)
            with position_context():
                assert await _read(db, "first") == (pg1.port, True)

            pg_replica.resume_replay()
            pg_replica.catch_up()
            await _settled(db)
            with position_context(carried):
                # Caught up: the replica serves the carried position again, and sees the
                # write whoever answers (a sample past the bound under load: the primary).
                deadline = time.monotonic() + 10
                while (found := await _read(db, "first")) != (pg_replica.port, True):
                    assert found == (pg1.port, True), found
                    assert time.monotonic() < deadline, "the replica never served again"
                    await _settled(db)
            with position_context():
                assert (await _read(db, "first"))[1] is True
        finally:
            await db.dispose()

    try:
        asyncio.run(scenario())
    finally:
        if pg_replica.replay_paused():
            pg_replica.resume_replay()


def test_read_your_writes_holds_over_a_thousand_write_read_pairs(
    pg_fleet: PostgresFleet, pg_replica: ReplicaServer, primary_url: URL
) -> None:
    db = SQLAlchemyDatabase(core_db.CONFIG, settings=_settings(primary_url, pg_replica))
    pg1 = pg_fleet["pg1"]

    async def scenario() -> tuple[int, dict[int, int]]:
        stale = 0
        served: dict[int, int] = {}
        try:
            for i in range(PAIRS):
                body = f"pair-{i}"
                with position_context():
                    await _write(db, body)
                    port, seen = await _read(db, body)
                stale += not seen
                served[port] = served.get(port, 0) + 1
                # Reads with no write of their own, so the replica gets its share.
                with position_context():
                    port, _ = await _read(db, body)
                    served[port] = served.get(port, 0) + 1
        finally:
            await db.dispose()
        return stale, served

    stale, served = asyncio.run(scenario())
    print(f"\n{PAIRS} write-read pairs: {stale} stale; reads served by port {served}")
    assert stale == 0
    # Both servers took part: after-write reads went to the primary, others to the replica.
    assert served.get(pg1.port, 0) >= 1
    assert served.get(pg_replica.port, 0) >= 1


def test_a_stopped_replica_is_skipped_for_the_primary(
    pg_fleet: PostgresFleet, pg_replica: ReplicaServer, primary_url: URL
) -> None:
    pg1 = pg_fleet["pg1"]
    db = SQLAlchemyDatabase(core_db.CONFIG, settings=_settings(primary_url, pg_replica))

    async def scenario() -> None:
        try:
            await _settled(db)
            assert (await _read(db, "x"))[0] == pg_replica.port
            pg_replica.stop()
            # At once (before any new sample) and later: the primary answers, no error.
            for _ in range(3):
                assert (await _read(db, "x"))[0] == pg1.port
                await _settled(db)
            states = await db.replica_states()
            assert [(s.state, s.lag_ms) for s in states] == [("down", None)]
            pg_replica.start()
            pg_replica.catch_up()
            deadline = time.monotonic() + 10
            while (await _read(db, "x"))[0] != pg_replica.port:
                assert time.monotonic() < deadline, "the replica never served reads again"
                await _settled(db)
            states = await db.replica_states()
            assert [s.state for s in states] == ["ok"]
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_read_session_is_read_only_and_leaves_no_read_only_connection_behind(
    pg_fleet: PostgresFleet, primary_url: URL
) -> None:
    """Without replicas: read sessions run read-only on the primary, a unit of work that
    wrote records no position (no extra query), and the pool's connections write again."""
    db = SQLAlchemyDatabase(
        core_db.CONFIG,
        settings=CoreSettings(
            url=primary_url.render_as_string(hide_password=False),
            environment="test",
            pool_size=1,
            max_overflow=0,
        ),
    )

    async def scenario() -> None:
        try:
            with position_context() as request:
                async with db.read_session() as s:
                    assert (await s.execute(text("SHOW transaction_read_only"))).scalar() == "on"
                with pytest.raises(Exception, match="read-only transaction"):
                    async with db.read_session() as s:
                        await s.execute(text("INSERT INTO notes (body) VALUES ('no')"))
                await _write(db, "yes")  # the same (only) pooled connection
                assert request.required is None
                assert not request.wrote
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_a_write_records_the_primary_position_once_per_unit_of_work(
    pg_fleet: PostgresFleet, pg_replica: ReplicaServer, primary_url: URL
) -> None:
    pg1 = pg_fleet["pg1"]
    db = SQLAlchemyDatabase(core_db.CONFIG, settings=_settings(primary_url, pg_replica))

    async def scenario() -> None:
        try:
            with position_context() as request:
                async with db.session() as s:  # reads only: nothing recorded
                    await s.execute(text("SELECT count(*) FROM notes"))
                assert request.required is None
                await _write(db, uuid.uuid4().hex)
                assert request.required is not None
                assert request.required <= pg1.current_wal_lsn()
                assert format_lsn(request.required).count("/") == 1
        finally:
            await db.dispose()

    asyncio.run(scenario())
