"""The fleet test servers (db_tools.fleet_testing) behave like the real thing: independent
primaries, a streaming replica whose lag is measurable and whose replay can be held, a
server that goes down and comes back, and a failover a multi-host URL follows.

Select with ``-k fleet`` or by this file's path (marked ``slow``: it starts servers).
"""

from __future__ import annotations

import statistics
import time
import uuid

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from db_kit.errors import translate
from db_shared.errors import DatabaseUnavailableError
from db_tools.fleet_testing import (
    PostgresFleet,
    ReplicaServer,
    lsn_to_int,
    multi_host_url,
    table_exists,
)
from db_tools.testing import run_sql

pytest_plugins = ["db_tools.fleet_testing"]
pytestmark = pytest.mark.slow

WRITES = 50
REPLAY_BOUND_S = 2.0  # generous for a loaded CI machine; locally it is a few milliseconds


def _table() -> str:
    return f"fleet_{uuid.uuid4().hex[:8]}"


def _timings(label: str, timings: dict[str, float]) -> str:
    return f"{label}: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items())


def test_fleet_primaries_are_independent_servers(pg_fleet: PostgresFleet) -> None:
    pg1, pg2 = pg_fleet["pg1"], pg_fleet["pg2"]
    print()
    for server in (pg1, pg2):
        print(_timings(server.name, server.timings))

    assert pg1.port != pg2.port
    assert pg1.admin_url.render_as_string(hide_password=False) == (
        f"postgresql+psycopg://postgres:{pg1.password}@127.0.0.1:{pg1.port}/postgres"
    )
    # Two clusters, not two names for one.
    ids = {s.scalar("SELECT system_identifier FROM pg_control_system()") for s in (pg1, pg2)}
    assert len(ids) == 2

    table = _table()
    pg1.scalar(f"CREATE TABLE {table} (id int)")
    try:
        assert table_exists(pg1, "postgres", table)
        assert not table_exists(pg2, "postgres", table)
    finally:
        pg1.scalar(f"DROP TABLE {table}")

    created = pg1.create_database("fleet")
    assert run_sql(created, "SELECT current_database()") == [(created.database,)]
    names = {row[0] for row in run_sql(pg2.admin_url, "SELECT datname FROM pg_database")}
    assert created.database not in names


def test_fleet_servers_require_their_password(pg_fleet: PostgresFleet) -> None:
    pg1, pg2 = pg_fleet["pg1"], pg_fleet["pg2"]
    # SCRAM over TCP: pg2's password does not open pg1.
    with pytest.raises(sa_exc.OperationalError, match="password authentication failed"):
        run_sql(pg1.admin_url.set(password=pg2.password), "SELECT 1")


def test_fleet_replica_replays_each_write_within_bound(
    pg_fleet: PostgresFleet, pg_replica: ReplicaServer
) -> None:
    pg1 = pg_fleet["pg1"]
    print()
    print(_timings(pg_replica.name, pg_replica.timings))
    assert pg_replica.is_in_recovery()
    assert not pg1.is_in_recovery()

    table = _table()
    pg1.scalar(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    try:
        pg_replica.catch_up()
        lags: list[float] = []
        with pg1.connect() as primary:
            for i in range(WRITES):
                primary.execute(f"INSERT INTO {table} VALUES (%s)", (i,))
                row = primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()
                assert row is not None
                lags.append(pg_replica.wait_for_replay(lsn_to_int(row[0]), REPLAY_BOUND_S))
        assert pg_replica.scalar(f"SELECT count(*) FROM {table}") == WRITES
        p50, worst = statistics.median(lags) * 1000, max(lags) * 1000
        reported = pg_replica.lag_ms()
        print(
            f"replay lag over {WRITES} writes: p50 {p50:.2f} ms, max {worst:.2f} ms; "
            f"now {pg_replica.lag_bytes()} bytes behind, "
            f"pg_stat_replication.replay_lag {'-' if reported is None else f'{reported:.2f}'} ms"
        )
        assert worst < REPLAY_BOUND_S * 1000
    finally:
        pg1.scalar(f"DROP TABLE {table}")


def test_fleet_replica_with_replay_paused_does_not_show_new_writes(
    pg_fleet: PostgresFleet, pg_replica: ReplicaServer
) -> None:
    pg1 = pg_fleet["pg1"]
    table = _table()
    pg1.scalar(f"CREATE TABLE {table} (id int)")
    try:
        pg_replica.catch_up()
        pg_replica.pause_replay()
        assert pg_replica.replay_paused()

        pg1.scalar(f"INSERT INTO {table} VALUES (1)")
        written = pg1.current_wal_lsn()
        # The WAL reaches the replica (received) but is not applied.
        deadline = time.monotonic() + 5
        while pg_replica.receive_lsn() < written:
            assert time.monotonic() < deadline, "the replica never received the write's WAL"
            time.sleep(0.01)
        assert pg_replica.scalar(f"SELECT count(*) FROM {table}") == 0
        assert pg_replica.replay_lsn() < written
        assert pg_replica.lag_bytes() > 0

        pg_replica.resume_replay()
        pg_replica.wait_for_replay(written)
        assert pg_replica.scalar(f"SELECT count(*) FROM {table}") == 1
        assert not pg_replica.replay_paused()
    finally:
        pg1.scalar(f"DROP TABLE {table}")


def test_fleet_server_stopped_refuses_connections_then_answers_after_start(
    pg_fleet: PostgresFleet,
) -> None:
    pg2 = pg_fleet["pg2"]
    url = pg2.admin_url.update_query_dict({"connect_timeout": "2"})
    began = time.perf_counter()
    pg2.stop()
    stopped = time.perf_counter() - began
    try:
        with pytest.raises(sa_exc.OperationalError) as raised:
            run_sql(url, "SELECT 1")
        error = translate(raised.value, url=url)
        assert isinstance(error, DatabaseUnavailableError)
        assert (error.host, error.port) == ("127.0.0.1", pg2.port)
        assert f"Cannot reach PostgreSQL at 127.0.0.1:{pg2.port}" in str(error)
        assert "refused" in str(error).lower()
        assert pg2.password not in str(error)
    finally:
        pg2.start()
    print(f"\npg2 stop {stopped * 1000:.0f} ms, start {pg2.timings['start'] * 1000:.0f} ms")
    assert run_sql(url, "SELECT 1") == [(1,)]


def test_fleet_failover_multi_host_url_follows_the_promoted_replica(
    pg_fleet: PostgresFleet,
) -> None:
    # A pair of its own: after this test its primary is stale for good.
    primary = pg_fleet.add_primary(f"failover_{uuid.uuid4().hex[:6]}")
    replica = pg_fleet.add_replica(primary)
    try:
        # The replica first: read-write must skip it while it is in recovery.
        url = multi_host_url([replica, primary])
        rendered = url.render_as_string(hide_password=False)
        written_by_hand = (
            f"postgresql+psycopg://postgres:{primary.password}@/postgres?connect_timeout=3"
            f"&host=127.0.0.1:{replica.port}&host=127.0.0.1:{primary.port}"
            "&target_session_attrs=read-write"
        )
        assert make_url(rendered) == make_url(written_by_hand)
        comma_form = make_url(
            f"postgresql+psycopg://postgres:{primary.password}@/postgres"
            f"?host=127.0.0.1,127.0.0.1&port={replica.port},{primary.port}"
            "&target_session_attrs=read-write"
        )
        for form in (make_url(written_by_hand), comma_form):
            assert run_sql(form, "SELECT inet_server_port(), pg_is_in_recovery()") == [
                (primary.port, False)
            ]
        run_sql(url, "CREATE TABLE accounts (id int PRIMARY KEY)")
        run_sql(url, "INSERT INTO accounts VALUES (1)")
        replica.catch_up()

        primary.stop()
        # Primary down, replica not yet promoted: nothing takes writes.
        with pytest.raises(sa_exc.OperationalError):
            run_sql(url, "SELECT 1")

        replica.promote()
        assert run_sql(url, "SELECT inet_server_port(), pg_is_in_recovery()") == [
            (replica.port, False)
        ]
        run_sql(url, "INSERT INTO accounts VALUES (2)")
        assert run_sql(url, "SELECT id FROM accounts ORDER BY id") == [(1,), (2,)]
        print()
        print(_timings(primary.name, primary.timings))
        print(_timings(replica.name, replica.timings))
    finally:
        pg_fleet.remove(replica)
        pg_fleet.remove(primary)
