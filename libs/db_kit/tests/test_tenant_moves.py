"""Online tenant moves between two real servers (``db_tools.fleet_testing``: pg1, the home
server, and pg2, both ``wal_level=logical``), with writers inserting and updating through
the app's own engine during the move.

Checked after each move: acknowledged writes lost = 0, updates lost = 0, the next id on the
target is above every copied id, no write landed on the source after the flip, and no
replication slot, publication or subscription is left. A move killed after each phase is
resumed, or rolled back, and ends consistent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy import create_engine, insert, text, update
from sqlalchemy.engine import URL

import core_db
from auth.tables import AuthUserTable
from core_db.config import REGISTRY
from core_db.settings import CoreSettings
from db_kit.database import SQLAlchemyDatabase
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.schema_tenants import SchemaTenantMigrator
from db_kit.tenancy.moves import MoveError, MoveMethod, TenantMover
from db_kit.tenancy.registry import MovePhase
from db_shared import DatabaseUnavailableError, RetryableError
from db_shared.tenancy import tenant_context
from db_tools.fleet_testing import PostgresFleet, fleet_environment

pytest_plugins = ["db_tools.fleet_testing"]
pytestmark = pytest.mark.slow

WRITERS = 2


def _sql(url: URL, statement: str, **params: object) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


@dataclass
class Fleet:
    urls: dict[str, URL]

    def settings(self) -> CoreSettings:
        servers = {
            n: {"primary": u.render_as_string(hide_password=False)} for n, u in self.urls.items()
        }
        return CoreSettings(
            url=self.urls["pg1"].render_as_string(hide_password=False),
            servers=json.dumps(servers),
            multi_tenant=True,
            environment="test",
            connect_timeout=3,
        )

    def new_tenant(self, rows: int = 200) -> str:
        """A tenant on pg1 with ``rows`` users (ids 1..rows)."""
        slug = f"mv_{uuid.uuid4().hex[:8]}"
        with fleet_environment(core_db.CONFIG, self.urls):
            SchemaTenantMigrator(core_db.CONFIG).create(slug, server="pg1")
        _sql(
            self.urls["pg1"],
            f"INSERT INTO tenant_{slug}.auth_users (email) "
            "SELECT 'seed' || g || '@example.com' FROM generate_series(1, :n) g",
            n=rows,
        )
        return slug

    def mover(self, **more: object) -> TenantMover:
        return TenantMover(core_db.CONFIG, settings=self.settings(), **more)  # type: ignore[arg-type]

    def placement(self, slug: str) -> tuple[str, int]:
        ((server, version),) = _sql(
            self.urls["pg1"],
            "SELECT server, placement_version FROM core.tenants WHERE slug = :s",
            s=slug,
        )
        return str(server), int(version)  # type: ignore[call-overload]

    def leftovers(self) -> dict[str, int]:
        """Replication objects of moves on either server (must all be 0)."""
        counts = {}
        for name, url in self.urls.items():
            counts[f"{name} slots"] = _sql(url, "SELECT count(*) FROM pg_replication_slots "
                                                "WHERE slot_name LIKE 'db_kit_move_%'")[0][0]  # fmt: skip
            counts[f"{name} publications"] = _sql(
                url, "SELECT count(*) FROM pg_publication WHERE pubname LIKE 'db_kit_move_%'"
            )[0][0]
            counts[f"{name} subscriptions"] = _sql(
                url, "SELECT count(*) FROM pg_subscription WHERE subname LIKE 'db_kit_move_%'"
            )[0][0]
        return counts  # type: ignore[return-value]


@pytest.fixture(scope="module")
def fleet(pg_fleet: PostgresFleet) -> Iterator[Fleet]:
    urls = {name: pg_fleet[name].create_database("moves") for name in ("pg1", "pg2")}
    # The registry is on the home server; a move makes what it needs on pg2.
    Migrator(REGISTRY, urls["pg1"]).upgrade()
    Migrator(core_db.CONFIG, urls["pg1"]).upgrade()
    yield Fleet(urls)
    for name, url in urls.items():
        pg_fleet[name].drop_database(url)


@dataclass
class Writers:
    """Writers through the app's engine: each inserts users and updates its own row."""

    db: SQLAlchemyDatabase
    slug: str
    stop: threading.Event = field(default_factory=threading.Event)
    inserted: list[str] = field(default_factory=list)
    last_update: dict[int, str] = field(default_factory=dict)
    acknowledged_at: list[float] = field(default_factory=list)
    refused: int = 0
    errors: list[str] = field(default_factory=list)

    async def run(self) -> None:
        user = self.db.model(AuthUserTable)
        with tenant_context(self.slug):
            rows = []
            for w in range(WRITERS):
                async with self.db.session() as s:
                    rows.append(
                        (
                            await s.execute(
                                insert(user)
                                .values(email=f"writer{w}@example.com")
                                .returning(user.id)
                            )
                        ).scalar_one()
                    )
            await asyncio.gather(*(self._write(w, rows[w]) for w in range(WRITERS)))

    async def _write(self, w: int, row_id: int) -> None:
        user = self.db.model(AuthUserTable)
        n = 0
        while not self.stop.is_set():
            n += 1
            email = f"w{w}-{n}@example.com"
            name = f"w{w}-{n}"
            try:
                async with self.db.session() as s:
                    await s.execute(insert(user).values(email=email))
                    await s.execute(update(user).where(user.id == row_id).values(username=name))
            except (RetryableError, DatabaseUnavailableError):
                self.refused += 1  # frozen (503) or moved (retry): nothing committed
                await asyncio.sleep(0.01)
                continue
            except Exception as exc:
                self.errors.append(repr(exc))
                await asyncio.sleep(0.01)
                continue
            self.inserted.append(email)
            self.last_update[row_id] = name
            self.acknowledged_at.append(time.monotonic())
            await asyncio.sleep(0.002)

    def longest_gap_ms(self) -> float:
        times = self.acknowledged_at
        return max((b - a for a, b in itertools.pairwise(times)), default=0) * 1000


def _move_under_writers(fleet: Fleet, slug: str, move: object) -> tuple[Writers, object]:
    """Run ``move()`` in a thread while the writers write; returns them and its result."""
    db = SQLAlchemyDatabase(core_db.CONFIG, settings=fleet.settings())
    writers = Writers(db, slug)
    result: list[object] = []

    async def scenario() -> None:
        task = asyncio.create_task(writers.run())
        await asyncio.sleep(0.3)
        try:
            result.append(await asyncio.to_thread(move))  # type: ignore[arg-type]
        except BaseException as exc:
            result.append(exc)
        await asyncio.sleep(0.3)  # writes after the flip, on the target
        writers.stop.set()
        await task
        await db.dispose()

    asyncio.run(scenario())
    return writers, result[0]


def _check_consistent(fleet: Fleet, slug: str, writers: Writers, server: str) -> None:
    url = fleet.urls[server]
    schema = f"tenant_{slug}"
    emails = {str(r[0]) for r in _sql(url, f"SELECT email FROM {schema}.auth_users")}
    lost = [e for e in writers.inserted if e not in emails]
    assert lost == [], f"{len(lost)} acknowledged writes lost: {lost[:5]}"
    names = dict(
        _sql(url, f"SELECT id, username FROM {schema}.auth_users WHERE username IS NOT NULL")
    )
    lost_updates = {i: n for i, n in writers.last_update.items() if names.get(i) != n}
    assert lost_updates == {}, f"updates lost: {lost_updates}"
    assert writers.errors == []
    # The next id on this server is above every copied one.
    top = _sql(url, f"SELECT max(id) FROM {schema}.auth_users")[0][0]
    (new,) = _sql(
        url, f"INSERT INTO {schema}.auth_users (email) VALUES (:e) RETURNING id",
        e=f"after-{uuid.uuid4().hex[:6]}@example.com",
    )[0]  # fmt: skip
    assert int(new) > int(top)  # type: ignore[call-overload]


def test_a_logical_move_under_writers_loses_nothing(fleet: Fleet, pg_fleet: PostgresFleet) -> None:
    slug = fleet.new_tenant(rows=2000)
    before = fleet.placement(slug)
    phases: list[MovePhase] = []
    mover = fleet.mover(on_phase=lambda phase, _: phases.append(phase))
    writers, report = _move_under_writers(fleet, slug, lambda: mover.move(slug, to="pg2"))
    assert not isinstance(report, BaseException), report
    assert phases == [
        MovePhase.COPIED, MovePhase.SYNCED, MovePhase.FROZEN, MovePhase.DRAINED,
        MovePhase.FLIPPED, MovePhase.DONE,
    ]  # fmt: skip
    assert fleet.placement(slug) == ("pg2", before[1] + 1)
    _check_consistent(fleet, slug, writers, "pg2")
    # No write landed on the source after the flip: its kept copy refuses writes, and holds
    # nothing the target lacks.
    copy = report.source_copy  # type: ignore[attr-defined]
    assert copy == f"tenant_{slug}__moved_{report.move_id}"  # type: ignore[attr-defined]
    on_source = {str(r[0]) for r in _sql(fleet.urls["pg1"], f"SELECT email FROM {copy}.auth_users")}
    on_target = {
        str(r[0]) for r in _sql(fleet.urls["pg2"], f"SELECT email FROM tenant_{slug}.auth_users")
    }
    assert on_source <= on_target
    with pytest.raises(Exception, match="is moving"):
        _sql(fleet.urls["pg1"], f"INSERT INTO {copy}.auth_users (email) VALUES ('late@x.org')")
    assert set(fleet.leftovers().values()) == {0}
    assert writers.inserted, "the writers wrote nothing"
    print(
        f"\nlogical move: {len(writers.inserted)} writes acknowledged, 0 lost, "
        f"{writers.refused} refused while frozen, freeze {report.freeze_ms} ms, "  # type: ignore[attr-defined]
        f"longest write gap {writers.longest_gap_ms():.0f} ms"
    )
    # The kept copy goes on request.
    assert fleet.mover().drop_source_copy(slug) == [f"pg1:{copy}"]
    assert _sql(
        fleet.urls["pg1"], "SELECT count(*) FROM pg_namespace WHERE nspname = :s", s=copy
    ) == [(0,)]


def test_a_dump_move_under_writers_loses_nothing(fleet: Fleet) -> None:
    slug = fleet.new_tenant(rows=2000)
    mover = fleet.mover()
    writers, report = _move_under_writers(
        fleet, slug, lambda: mover.move(slug, to="pg2", method=MoveMethod.DUMP)
    )
    assert not isinstance(report, BaseException), report
    assert fleet.placement(slug)[0] == "pg2"
    _check_consistent(fleet, slug, writers, "pg2")
    assert set(fleet.leftovers().values()) == {0}


class Killed(Exception):
    """Stands for the move's process dying right after a phase was recorded."""


def _killer(at: MovePhase):  # type: ignore[no-untyped-def]
    def on_phase(phase: MovePhase, _: str) -> None:
        if phase is at:
            raise Killed(phase)

    return on_phase


@pytest.mark.parametrize(
    "phase",
    [MovePhase.COPIED, MovePhase.SYNCED, MovePhase.FROZEN, MovePhase.DRAINED, MovePhase.FLIPPED],
)
def test_a_move_killed_after_each_phase_resumes(fleet: Fleet, phase: MovePhase) -> None:
    slug = fleet.new_tenant()
    with pytest.raises(MoveError, match="run the move again to resume"):
        fleet.mover(on_phase=_killer(phase)).move(slug, to="pg2")
    (row,) = [m for m in fleet.mover().moves(slug)]
    assert row.phase == phase.value
    report = fleet.mover().move(slug, to="pg2")
    assert report.phase == "done"
    assert fleet.placement(slug)[0] == "pg2"
    assert set(fleet.leftovers().values()) == {0}
    rows = _sql(fleet.urls["pg2"], f"SELECT count(*) FROM tenant_{slug}.auth_users")
    assert rows == [(200,)]


@pytest.mark.parametrize(
    "phase", [MovePhase.COPIED, MovePhase.SYNCED, MovePhase.FROZEN, MovePhase.DRAINED]
)
def test_a_move_killed_after_each_phase_rolls_back(fleet: Fleet, phase: MovePhase) -> None:
    slug = fleet.new_tenant()
    with pytest.raises(MoveError):
        fleet.mover(on_phase=_killer(phase)).move(slug, to="pg2")
    began = time.perf_counter()
    report = fleet.mover().abort(slug)
    assert report.phase == "aborted"
    assert time.perf_counter() - began < 5
    # Served from the source again, writes accepted there; nothing left on the target.
    assert fleet.placement(slug)[0] == "pg1"
    _sql(fleet.urls["pg1"], f"INSERT INTO tenant_{slug}.auth_users (email) VALUES ('back@x.org')")
    assert _sql(
        fleet.urls["pg2"],
        "SELECT count(*) FROM pg_namespace WHERE nspname = :s",
        s=f"tenant_{slug}",
    ) == [(0,)]
    assert set(fleet.leftovers().values()) == {0}
    # And it can be moved afterwards.
    assert fleet.mover().move(slug, to="pg2").phase == "done"


def test_a_flipped_move_cannot_be_aborted_and_refusals_are_clear(fleet: Fleet) -> None:
    slug = fleet.new_tenant()
    with pytest.raises(MoveError):
        fleet.mover(on_phase=_killer(MovePhase.FLIPPED)).move(slug, to="pg2")
    with pytest.raises(MoveError, match="has flipped"):
        fleet.mover().abort(slug)
    with pytest.raises(MoveError, match="unfinished move"):
        fleet.mover().move(slug, to="pg1")
    assert fleet.mover().move(slug, to="pg2").phase == "done"
    with pytest.raises(MoveError, match="already on server pg2"):
        fleet.mover().move(slug, to="pg2")
    with pytest.raises(MoveError, match="lists no server 'pg9'"):
        fleet.mover().move(slug, to="pg9")
    with pytest.raises(MoveError, match="no unfinished move"):
        fleet.mover().abort(slug)


def test_a_tenant_behind_head_is_refused(fleet: Fleet) -> None:
    slug = fleet.new_tenant()
    _sql(fleet.urls["pg1"], f"UPDATE tenant_{slug}.alembic_version SET version_num = 'old'")
    with pytest.raises(MoveError, match="is not at head"):
        fleet.mover().move(slug, to="pg2")
    assert fleet.placement(slug)[0] == "pg1"
    fleet.mover().abort(slug)


# database-per-tenant ---------------------------------------------------------------------


def test_a_tenant_database_moves_under_writers(pg_fleet: PostgresFleet) -> None:
    """bibikos: the tenant's database moves from pg1 to pg2 (a publication for all its
    tables); the registry's control database stays on pg1."""
    import bibikos_db
    from bibikos_db import BibikosSettings
    from bibikos_db.config import REGISTRY as CONTROL
    from db_kit.tenancy import TenantRoutedDatabase

    pg1, pg2 = pg_fleet["pg1"], pg_fleet["pg2"]
    control = pg1.create_database("moves_control")
    Migrator(CONTROL, control).upgrade()
    slug = f"db_{uuid.uuid4().hex[:8]}"
    name = f"tenant_{slug}"
    _sql_autocommit(pg1.url("postgres"), f"CREATE DATABASE {name}")
    tenant_url = pg1.url(name)
    Migrator(bibikos_db.CONFIG, tenant_url).upgrade()
    _sql(
        tenant_url,
        "INSERT INTO auth_users (email) SELECT 'seed' || g || '@x.org' FROM generate_series(1, 500) g",
    )
    _sql(
        control,
        "INSERT INTO control.tenants (slug, name, database_name, status, server) "
        "VALUES (:s, :s, :d, 'active', 'pg1')",
        s=slug, d=name,
    )  # fmt: skip
    servers = {
        "pg1": {"primary": control.render_as_string(hide_password=False)},
        "pg2": {"primary": pg2.url("postgres").render_as_string(hide_password=False)},
    }
    settings = BibikosSettings(
        url=control.render_as_string(hide_password=False),
        servers=json.dumps(servers),
        multi_tenant=True,
        environment="test",
        connect_timeout=3,
    )
    db = TenantRoutedDatabase(bibikos_db.CONFIG, settings=settings)
    writers = Writers(db, slug)  # type: ignore[arg-type]
    mover = TenantMover(bibikos_db.CONFIG, settings=settings)
    result: list[object] = []

    async def scenario() -> None:
        task = asyncio.create_task(writers.run())
        await asyncio.sleep(0.3)
        result.append(await asyncio.to_thread(mover.move, slug, to="pg2"))
        await asyncio.sleep(0.5)
        writers.stop.set()
        await task
        await db.dispose()

    try:
        asyncio.run(scenario())
        report = result[0]
        assert report.phase == "done"  # type: ignore[attr-defined]
        target = pg2.url(name)
        emails = {str(r[0]) for r in _sql(target, "SELECT email FROM auth_users")}
        assert [e for e in writers.inserted if e not in emails] == []
        names = dict(_sql(target, "SELECT id, username FROM auth_users WHERE username IS NOT NULL"))
        assert {i: n for i, n in writers.last_update.items() if names.get(i) != n} == {}
        assert writers.errors == []
        assert writers.inserted
        (top,), (new,) = (
            _sql(target, "SELECT max(id) FROM auth_users")[0],
            _sql(target, "INSERT INTO auth_users (email) VALUES ('n@x.org') RETURNING id")[0],
        )
        assert int(new) > int(top)  # type: ignore[call-overload]
        # The source database is kept under another name, frozen; no slot is left.
        copy = report.source_copy  # type: ignore[attr-defined]
        assert copy == f"{name}__moved_{report.move_id}"  # type: ignore[attr-defined]
        assert pg1.scalar("SELECT count(*) FROM pg_database WHERE datname = %s", (copy,)) == 1
        assert (
            pg1.scalar(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'db_kit_move_%%'"
            )
            == 0
        )
        assert TenantMover(bibikos_db.CONFIG, settings=settings).drop_source_copy(slug) == [
            f"pg1:{copy}"
        ]
    finally:
        for server in (pg1, pg2):
            _sql_autocommit(server.url("postgres"), f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        pg1.drop_database(control)


def _sql_autocommit(url: URL, statement: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def test_the_cli_moves_lists_and_drops_the_kept_copy(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from db_tools.cli import build_app

    slug = fleet.new_tenant()
    settings = fleet.settings()
    monkeypatch.setenv("DATABASE_URL", fleet.urls["pg1"].render_as_string(hide_password=False))
    monkeypatch.setenv("CORE_DB_SERVERS", str(settings.servers))
    monkeypatch.setenv("CORE_DB_MULTI_TENANT", "true")
    monkeypatch.setenv("ENVIRONMENT", "production")
    core_db.CONFIG.reset()
    try:
        runner = CliRunner()
        app = build_app()
        # Production asks first; without an answer nothing moves.
        refused = runner.invoke(app, ["core", "tenants", "move", slug, "--to", "pg2"], input="n\n")
        assert refused.exit_code == 1, refused.output
        assert fleet.placement(slug)[0] == "pg1"
        moved = runner.invoke(app, ["core", "tenants", "move", slug, "--to", "pg2", "--yes"])
        assert moved.exit_code == 0, moved.output
        assert f"tenant {slug} moved from pg1 to pg2 (logical)" in moved.output
        assert "flipped" in moved.output
        listed = runner.invoke(app, ["core", "tenants", "moves", slug])
        assert listed.exit_code == 0, listed.output
        assert "done" in listed.output
        again = runner.invoke(app, ["core", "tenants", "move", slug, "--to", "pg2", "--yes"])
        assert again.exit_code == 1
        assert "already on server pg2" in again.output
        dropped = runner.invoke(app, ["core", "tenants", "drop-moved", slug, "--yes"])
        assert dropped.exit_code == 0, dropped.output
        assert f"dropped pg1:tenant_{slug}__moved_" in dropped.output
        for secret in {fleet.urls["pg1"].password, fleet.urls["pg2"].password}:
            assert str(secret) not in moved.output + listed.output + again.output
    finally:
        core_db.CONFIG.reset()
