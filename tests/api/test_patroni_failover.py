"""Losing a primary under a running app: my_api on a Patroni pair (one etcd, HAProxy), all
from Debian packages (``db_tools.patroni_testing``; skipped with the reason where they cannot
be installed), ``synchronous_mode: true``.

Writers register users through the app (``POST /auth/register``) without pause while
(1) Patroni switches the leader over (``POST /switchover``), or (2) the leader's node is
lost (its Patroni and its postmaster SIGKILLed: nothing restarts it, the leader key runs
out after the TTL). The app reaches the database through HAProxy's primary port, or through
a libpq multi-host URL with ``target_session_attrs=read-write``. Every write the app
acknowledged (201) is on the new leader afterwards; during the gap the app answers
503 + Retry-After, never 500; it writes again without a restart.

``-s`` prints the figures: write gap, writes acknowledged, lost, 503s.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import psycopg
import pytest
from harness import LiveServer
from sqlalchemy.engine import URL

import core_db
from core_db.settings import CoreSettings
from db_kit.database import SQLAlchemyDatabase
from db_kit.migrations.migrator import Migrator
from db_tools.patroni_testing import PatroniCluster, PatroniNode
from my_api.main import create_app

pytest_plugins = ["db_tools.patroni_testing"]
pytestmark = pytest.mark.slow

PASSWORD = "long enough 1"
WRITERS = 4
PROBE_WRITERS = 2
STEADY = 1.0  # seconds of writes before the disruption and after recovery


@dataclass
class Attempt:
    email: str
    began: float
    ended: float
    status: int  # 0: no HTTP answer
    retry_after: str | None
    body: str


@dataclass
class Writers:
    """``WRITERS`` threads registering a new user each, back to back, through the app."""

    base_url: str
    attempts: list[Attempt] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _write(self, worker: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self._stop.is_set():
                email = f"w{worker}-{uuid.uuid4().hex[:12]}@example.com"
                began = time.perf_counter()
                try:
                    r = client.post("/auth/register", json={"email": email, "password": PASSWORD})
                    status, retry_after, body = r.status_code, r.headers.get("Retry-After"), r.text
                except httpx.HTTPError as exc:
                    status, retry_after, body = 0, None, repr(exc)
                attempt = Attempt(email, began, time.perf_counter(), status, retry_after, body)
                with self._lock:
                    self.attempts.append(attempt)
                if status == 503:
                    time.sleep(0.05)  # a client honouring Retry-After would wait longer

    def __enter__(self) -> Writers:
        self._threads = [
            threading.Thread(target=self._write, args=(i,), daemon=True) for i in range(WRITERS)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def acknowledged_since(self, moment: float) -> int:
        with self._lock:
            return sum(1 for a in self.attempts if a.status == 201 and a.began >= moment)

    def wait_for_writes_since(self, moment: float, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.acknowledged_since(moment) < count:
            assert time.monotonic() < deadline, "the app did not write again"
            time.sleep(0.05)

    def write_gap(self) -> float:
        """The longest time between two consecutive acknowledged writes (completion)."""
        ends = sorted(a.ended for a in self.attempts if a.status == 201)
        return max((b - a for a, b in itertools.pairwise(ends)), default=0.0)


class Probe:
    """Writers without the app, for volume: ``PROBE_WRITERS`` psycopg connections on the
    multi-host conninfo, each inserting one row per (autocommit) transaction as fast as it
    goes, reconnecting after an error; ``acknowledged`` holds the rows whose COMMIT
    returned."""

    def __init__(self, cluster: PatroniCluster, database: str) -> None:
        self.cluster = cluster
        self.database = database
        self.table = f"probe_{uuid.uuid4().hex[:8]}"
        self.acknowledged: list[int] = []
        self.errors = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        with cluster.connect_leader(database) as conn:
            conn.execute(f"CREATE TABLE {self.table} (n bigint PRIMARY KEY)")

    def _write(self, worker: int) -> None:
        conninfo = self.cluster.multi_host_conninfo(self.database)
        statement = f"INSERT INTO {self.table} (n) VALUES (%s)"
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        n = worker
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(conninfo, autocommit=True)
                conn.execute(statement, (n,))
                self.acknowledged.append(n)
            except psycopg.Error:
                self.errors += 1
                if conn is not None:
                    conn.close()
                    conn = None
                time.sleep(0.05)
            n += PROBE_WRITERS
        if conn is not None:
            conn.close()

    def __enter__(self) -> Probe:
        self._threads = [
            threading.Thread(target=self._write, args=(i,), daemon=True)
            for i in range(PROBE_WRITERS)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def lost(self) -> set[int]:
        """Acknowledged rows missing on the (new) leader."""
        with self.cluster.connect_leader(self.database) as conn:
            stored = {row[0] for row in conn.execute(f"SELECT n FROM {self.table}")}
        return set(self.acknowledged) - stored


@pytest.fixture(scope="module")
def core_database(patroni_cluster: PatroniCluster) -> str:
    """A migrated core database on the cluster; its name."""
    url = patroni_cluster.create_database("patroni")
    Migrator(core_db.CONFIG, url).upgrade()
    assert url.database is not None
    return url.database


@pytest.fixture
def cluster(patroni_cluster: PatroniCluster) -> Iterator[PatroniCluster]:
    """The module's pair, healthy (a node lost by an earlier test back as a replica, the
    synchronous standby designated, caught up) before and after the test."""
    for node in patroni_cluster.nodes:
        if not node.is_running():
            patroni_cluster.start_node(node)
    patroni_cluster.wait_healthy()
    if not patroni_cluster.synchronous_mode:  # turned off by the asynchronous test
        patroni_cluster.set_synchronous_mode(True)
    yield patroni_cluster
    for node in patroni_cluster.nodes:
        if not node.is_running():
            patroni_cluster.start_node(node)


ROUTES: dict[str, Callable[[PatroniCluster, str], URL]] = {
    "haproxy": lambda cluster, database: cluster.haproxy_url(database),
    "multi_host": lambda cluster, database: cluster.multi_host_url(database),
}


def _app_url(cluster: PatroniCluster, database: str, route: str) -> str:
    url = ROUTES[route](cluster, database)
    if route == "haproxy":
        url = url.update_query_dict({"connect_timeout": "2"})
    return url.render_as_string(hide_password=False)


def _run_disruption(
    cluster: PatroniCluster,
    database: str,
    route: str,
    what: str,
    disrupt: Callable[[], PatroniNode],
    *,
    lost_leader: bool = False,
    may_lose: bool = False,
) -> None:
    """Writers through the app on ``route`` (and the probe's, without it); ``disrupt()``
    returns the node that should lead afterwards; then every acknowledged write must be on
    it (unless ``may_lose``: then the losses are only printed)."""
    settings = CoreSettings(url=_app_url(cluster, database, route), environment="test",
                            connect_timeout=2)  # fmt: skip
    app = create_app(SQLAlchemyDatabase(core_db.CONFIG, settings=settings))
    probe = Probe(cluster, database)
    with LiveServer(app) as base, Writers(base) as writers, probe:
        began = time.perf_counter()
        writers.wait_for_writes_since(began, 5, timeout=30)
        time.sleep(STEADY)
        disrupted_at = time.perf_counter()
        new_leader = disrupt()
        if lost_leader:  # the gap lasts about the TTL: readiness says so meanwhile
            with httpx.Client(base_url=base, timeout=10) as client:
                not_ready = client.get("/health/ready")
            assert not_ready.status_code == 503, not_ready.text
            assert not_ready.headers["Retry-After"].isdigit()
        cluster.wait_for_leader(new_leader)
        # The same app process writes again: no restart.
        recovered = time.perf_counter()
        writers.wait_for_writes_since(recovered, 5, timeout=30)
        time.sleep(STEADY)
        with httpx.Client(base_url=base, timeout=10) as client:
            ready = client.get("/health/ready")
    attempts = writers.attempts
    acknowledged = {a.email for a in attempts if a.status == 201}
    unavailable = [a for a in attempts if a.status == 503]
    other = [a for a in attempts if a.status not in (201, 503)]
    with cluster.connect_leader(database) as conn:
        stored = {row[0] for row in conn.execute("SELECT email FROM auth_users")}
    lost = acknowledged - stored
    probe_lost = probe.lost()
    print(
        f"\n{what} via {route}: write gap {writers.write_gap():.2f} s, {new_leader.name} "
        f"leading {recovered - disrupted_at:.2f} s after the disruption; app writes "
        f"acknowledged {len(acknowledged)}, lost {len(lost)}, answered 503 "
        f"{len(unavailable)}, other answers {len(other)}; direct writes acknowledged "
        f"{len(probe.acknowledged)}, lost {len(probe_lost)}"
    )
    assert ready.status_code == 200, ready.text
    assert other == [], [(a.status, a.body[:200]) for a in other[:5]]
    assert unavailable, "no request fell in the gap: the disruption was not observed"
    assert all(a.retry_after is not None and a.retry_after.isdigit() for a in unavailable), [
        (a.retry_after, a.body[:200]) for a in unavailable if not (a.retry_after or "").isdigit()
    ][:5]
    if not may_lose:
        assert lost == set(), f"{len(lost)} acknowledged writes lost: {sorted(lost)[:5]}"
        assert probe_lost == set(), f"{len(probe_lost)} direct writes lost"


def _lose_leader(cluster: PatroniCluster) -> Callable[[], PatroniNode]:
    """Lose the leader's node (SIGKILL: its Patroni, its postmaster and its children); the
    other node should lead next."""

    def lose() -> PatroniNode:
        leader = cluster.leader()
        assert leader is not None
        survivor = next(n for n in cluster.nodes if n is not leader)
        cluster.kill_node(leader)
        return survivor

    return lose


@pytest.mark.parametrize("route", ["haproxy", "multi_host"])
def test_a_switchover_loses_no_acknowledged_write(
    cluster: PatroniCluster, core_database: str, route: str
) -> None:
    _run_disruption(cluster, core_database, route, "switchover", cluster.switchover)


@pytest.mark.parametrize("route", ["haproxy", "multi_host"])
def test_losing_the_leader_in_synchronous_mode_loses_no_acknowledged_write(
    cluster: PatroniCluster, core_database: str, route: str
) -> None:
    assert cluster.synchronous_mode

    _run_disruption(
        cluster,
        core_database,
        route,
        "leader lost (SIGKILL)",
        _lose_leader(cluster),
        lost_leader=True,
    )


def test_losing_the_leader_in_asynchronous_mode_is_measured(
    cluster: PatroniCluster, core_database: str
) -> None:
    """Asynchronous replication (Patroni's default): the same loss of the leader; the app
    behaves the same (503 + Retry-After, back without restart), but the commits the leader
    acknowledged and had not yet sent may be lost: measured and printed, not asserted
    (it depends on timing)."""
    cluster.set_synchronous_mode(False)  # the next test's ``cluster`` turns it on again

    _run_disruption(
        cluster, core_database, "multi_host", "leader lost (SIGKILL), asynchronous",
        _lose_leader(cluster), lost_leader=True, may_lose=True,
    )  # fmt: skip
