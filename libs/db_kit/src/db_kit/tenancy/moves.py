"""Moving a tenant's data from one server of a fleet to another while it is written to.

``TenantMover.move(slug, to=...)`` runs PostgreSQL's logical replication under a protocol
whose every phase is recorded in the registry's ``tenant_moves`` table
(``db_kit.tenancy.registry.TenantMoveMixin``), so a move killed at any point resumes from
its last phase (run it again) or is rolled back (``abort``):

1. ``copied``: the tenant's tables made on the target by its own migrations (the move
   refuses a tenant that is not at head), emptied, and a marker table on both sides;
2. ``synced``: a publication of the tenant's tables on the source, a subscription on the
   target; every table copied and the slot caught up;
3. ``frozen``: a statement trigger on each of the tenant's source tables refuses writes
   (SQLSTATE ``DBK01``, answered 503 + Retry-After); creating it waits for writers in
   flight, so no write is lost between here and the flip;
4. ``drained``: a marker row written on the source has arrived on the target: everything
   before the freeze is there; sequences on the target set to at least the source's;
5. ``flipped``: the registry places the tenant on the target, its placement version
   bumped (every process is told by NOTIFY; a session still on the source finds the
   tenant's schema renamed away and is retried on the target);
6. ``done``: subscription, publication and slot dropped; the source copy kept under
   another name for a rollback window (``drop_source_copy`` drops it).

``method="dump"`` replaces 2 and 4 by a copy of every table while frozen (``COPY``, in
foreign-key order) for servers without ``wal_level=logical``. Schema-per-tenant moves
a schema between the servers' databases; database-per-tenant moves a database (a
publication for all its tables). The move holds the tenant's migration lock on the source
throughout (DDL is not replicated).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from sqlalchemy import Connection, Engine, func, insert, inspect, select, text, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from db_kit.config import DatabaseConfig
from db_kit.engine import build_admin_engine
from db_kit.errors import FROZEN_SQLSTATE, first_line
from db_kit.migrations.env import LOCK_CLASS, lock_key
from db_kit.migrations.locks import set_migration_timeouts, with_lock_retries
from db_kit.migrations.migrator import Migrator
from db_kit.settings import DatabaseSettings
from db_kit.sql import quote_identifier as q
from db_kit.tenancy.registry import (
    MovePhase,
    TenantAuditMixin,
    TenantMoveMixin,
    TenantRecordMixin,
    TenantStatus,
)
from db_shared.errors import ConfigurationError, DatabaseError, NotFoundError
from db_shared.tenancy import validate_tenant_slug

__all__ = ["MoveError", "MoveMethod", "MoveReport", "TenantMover"]

log = logging.getLogger(__name__)

MARKER = "_db_kit_move_marker"
FREEZE_TRIGGER = "_db_kit_move_freeze"
FREEZE_FUNCTION = "_db_kit_move_frozen"
# The slot may trail the source's WAL by this much when the sync is called caught up.
CAUGHT_UP_BYTES = 1 << 20
POLL = 0.05

_ORDER = [
    MovePhase.PLANNED,
    MovePhase.COPIED,
    MovePhase.SYNCED,
    MovePhase.FROZEN,
    MovePhase.DRAINED,
    MovePhase.FLIPPED,
    MovePhase.DONE,
]


_PHASES = frozenset(p.value for p in _ORDER)


class MoveMethod(StrEnum):
    LOGICAL = "logical"  # logical replication, writes frozen only for the cut-over
    DUMP = "dump"  # writes frozen while every table is copied (no wal_level=logical)


class MoveError(DatabaseError):
    """A move refused or stopped; the message says why and how to resume or roll back."""


@dataclass(frozen=True)
class MoveReport:
    move_id: int
    slug: str
    source: str
    target: str
    method: str
    phase: str
    freeze_ms: int | None
    seconds: float
    source_copy: str | None


@dataclass(frozen=True)
class _Place:
    """Where a tenant's tables are on one server: ``url``'s database, in ``schema``
    (schema-per-tenant) or in every user schema (database-per-tenant: ``schema`` None)."""

    server: str
    url: URL
    schema: str | None

    def tables_filter(self) -> str:
        if self.schema is not None:
            return "n.nspname = :schema"
        return (
            "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
        )

    @property
    def marker(self) -> str:
        return f"{q(self.schema or 'public')}.{MARKER}"

    @property
    def function(self) -> str:
        return f"{q(self.schema or 'public')}.{FREEZE_FUNCTION}"


def _phase_index(phase: str) -> int:
    return _ORDER.index(MovePhase(phase)) if phase in _PHASES else -1


def _model_composing(tenant_model: type[Any], mixin: type[Any]) -> type[Any] | None:
    found = [
        m.class_ for m in inspect(tenant_model).registry.mappers if issubclass(m.class_, mixin)
    ]
    return found[0] if len(found) == 1 else None


def conninfo(url: URL) -> str:
    """``url`` as a libpq connection string (what a subscription connects with), through
    SQLAlchemy's own translation (libpq multi-host URLs included)."""
    _, kwargs = url.get_dialect()().create_connect_args(url)
    return make_conninfo("", **{k: v for k, v in kwargs.items() if v is not None})


class TenantMover:
    """Moves, aborts and lists tenant moves of one tenant-per-schema or tenant-per-database
    database across the servers of its fleet (``<PREFIX>SERVERS``)."""

    def __init__(
        self,
        db: DatabaseConfig,
        *,
        settings: DatabaseSettings | None = None,
        actor: str = "cli",
        sync_timeout: float = 3600.0,
        drain_timeout: float = 60.0,
        on_phase: Callable[[MovePhase, str], None] | None = None,
    ) -> None:
        if db.tenancy is None and db.database_tenancy is None:
            raise ConfigurationError(f"The {db.name} database has no tenants to move.")
        self.db = db
        self.settings = settings if settings is not None else db.settings()
        self.actor = actor
        self.sync_timeout = sync_timeout
        self.drain_timeout = drain_timeout
        self.on_phase = on_phase
        self.fleet = self.settings.fleet()
        home = self.settings.home_server()
        if home is None:
            raise ConfigurationError(f"{self.settings.url_variable} is not set.")
        self.home = home
        self.tenant_model: type[TenantRecordMixin] = db.registry_model
        move = _model_composing(self.tenant_model, TenantMoveMixin)
        if move is None:
            raise ConfigurationError(
                f"The {db.name} tenant registry has no TenantMoveMixin table: compose one "
                "(tenant_moves) and migrate the registry."
            )
        self.move_model: type[TenantMoveMixin] = move
        self.audit_model = _model_composing(self.tenant_model, TenantAuditMixin)
        self._engines: dict[str, Engine] = {}

    # connections ---------------------------------------------------------------------

    def _engine(self, url: URL) -> Engine:
        key = url.render_as_string(hide_password=False)
        engine = self._engines.get(key)
        if engine is None:
            engine = self._engines[key] = build_admin_engine(self.settings, url)
        return engine

    @contextlib.contextmanager
    def _connect(self, url: URL, *, autocommit: bool = False) -> Iterator[Connection]:
        engine = self._engine(url)
        with engine.connect() as conn:
            if autocommit:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    def _registry(self) -> contextlib.AbstractContextManager[Connection]:
        return self._connect(self.settings.resolved_url())

    def close(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()

    # places ----------------------------------------------------------------------------

    def _server_url(self, server: str) -> URL:
        found = self.fleet.get(server)
        if found is None:
            raise MoveError(
                f"{self.settings.servers_variable} lists no server {server!r} (it lists "
                f"{', '.join(self.fleet)})."
            )
        return found.primary

    def _place(self, server: str, location: str) -> _Place:
        url = self._server_url(server)
        if self.db.tenancy is not None:
            return _Place(server, url, location)
        return _Place(server, url.set(database=location), None)

    # the registry ----------------------------------------------------------------------

    def _tenant(self, conn: Connection, slug: str) -> Any:
        t = self.tenant_model
        location = (
            t.schema_name  # type: ignore[attr-defined]
            if self.db.tenancy is not None
            else t.database_name  # type: ignore[attr-defined]
        )
        row = conn.execute(
            select(t.slug, t.status, t.server, t.placement_version, location.label("location"))
            .where(t.slug == slug)
            .with_for_update()
        ).first()
        if row is None:
            raise NotFoundError("tenant", slug)
        return row

    def _open_move(self, conn: Connection, slug: str) -> Any:
        m = self.move_model
        return conn.execute(
            select(*_columns(m)).where(
                m.tenant_slug == slug,
                m.phase.not_in([MovePhase.DONE.value, MovePhase.ABORTED.value]),
            )
        ).first()

    def _record(self, move_id: int, phase: MovePhase, **values: Any) -> None:
        m = self.move_model
        with self._registry() as conn, conn.begin():
            conn.execute(
                update(m).where(m.id == move_id).values(phase=phase.value, error=None, **values)
            )
        if self.on_phase is not None:
            self.on_phase(phase, "")

    def _fail(self, move_id: int, error: str) -> None:
        m = self.move_model
        with contextlib.suppress(DBAPIError), self._registry() as conn, conn.begin():
            conn.execute(update(m).where(m.id == move_id).values(error=error[:2000]))

    def _audit(self, conn: Connection, slug: str, action: str, detail: dict[str, Any]) -> None:
        if self.audit_model is not None:
            conn.execute(
                insert(self.audit_model).values(
                    actor=self.actor, action=action, tenant_slug=slug, detail=detail
                )
            )

    def moves(self, slug: str | None = None) -> list[Any]:
        """Recorded moves, newest first (of ``slug`` only, when given)."""
        m = self.move_model
        stmt = select(*_columns(m)).order_by(m.id.desc())
        if slug is not None:
            stmt = stmt.where(m.tenant_slug == validate_tenant_slug(slug))
        with self._registry() as conn:
            return list(conn.execute(stmt))

    # the move --------------------------------------------------------------------------

    def move(
        self, slug: str, *, to: str, method: MoveMethod | str = MoveMethod.LOGICAL
    ) -> MoveReport:
        """Move tenant ``slug`` to server ``to``, or resume its unfinished move there."""
        slug = validate_tenant_slug(slug)
        method = MoveMethod(method)
        started = time.perf_counter()
        move_id, source, phase = self._start(slug, to, method)
        try:
            self._run(move_id, slug, source, to, method, phase)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, MoveError) else first_line(exc)
            self._fail(move_id, reason)
            raise MoveError(
                f"moving tenant {slug} from {source} to {to} stopped: {reason}. Nothing is "
                f"lost; run the move again to resume it, or roll it back with "
                f"`db {self.db.name} tenants move {slug} --abort`."
            ) from exc
        finally:
            self.close()
        row = self.moves(slug)[0]
        return MoveReport(
            row.id, slug, source, to, method.value, row.phase, row.freeze_ms,
            time.perf_counter() - started, row.source_copy,
        )  # fmt: skip

    def _start(self, slug: str, to: str, method: MoveMethod) -> tuple[int, str, MovePhase]:
        self._server_url(to)
        with self._registry() as conn, conn.begin():
            tenant = self._tenant(conn, slug)
            open_move = self._open_move(conn, slug)
            if open_move is not None:
                if (open_move.target, open_move.method) != (to, method.value):
                    raise MoveError(
                        f"tenant {slug} has an unfinished move (#{open_move.id}, "
                        f"{open_move.method}, to {open_move.target}, at {open_move.phase}); "
                        f"resume it with --to {open_move.target} --method {open_move.method}, "
                        "or roll it back with --abort."
                    )
                return open_move.id, open_move.source, MovePhase(open_move.phase)
            source = tenant.server or self.home
            if tenant.status == TenantStatus.PROVISIONING.value:
                raise MoveError(f"tenant {slug} is still being provisioned.")
            if source == to:
                raise MoveError(f"tenant {slug} is already on server {to}.")
            move_id = conn.execute(
                insert(self.move_model)
                .values(
                    tenant_slug=slug, source=source, target=to, method=method.value,
                    actor=self.actor,
                )
                .returning(self.move_model.id)
            ).scalar_one()  # fmt: skip
        return move_id, source, MovePhase.PLANNED

    def _run(
        self, move_id: int, slug: str, source_name: str, target_name: str,
        method: MoveMethod, phase: MovePhase,
    ) -> None:  # fmt: skip
        with self._registry() as conn:
            location = self._tenant(conn, slug).location
            conn.rollback()
        source = self._place(source_name, location)
        target = self._place(target_name, location)
        done = _phase_index(phase)
        with self._connect(source.url) as locked:
            self._hold_migration_lock(locked, slug, source)
            if done < _phase_index(MovePhase.COPIED):
                self._check_at_head(slug, source)
                if method is MoveMethod.LOGICAL:
                    self._check_replica_identity(source)
                self._copy_tables(target, source)
                self._record(move_id, MovePhase.COPIED)
            if method is MoveMethod.LOGICAL and done < _phase_index(MovePhase.SYNCED):
                self._sync(move_id, source, target)
                self._record(move_id, MovePhase.SYNCED)
            frozen_at = time.perf_counter()
            if done < _phase_index(MovePhase.FROZEN):
                self._freeze(slug, source)
                frozen_at = time.perf_counter()
                self._record(move_id, MovePhase.FROZEN)
            if done < _phase_index(MovePhase.DRAINED):
                if method is MoveMethod.LOGICAL:
                    self._drain(source, target)
                else:
                    self._copy_rows(source, target)
                self._sequences(source, target)
                self._record(move_id, MovePhase.DRAINED)
            if done < _phase_index(MovePhase.FLIPPED):
                freeze_ms = round((time.perf_counter() - frozen_at) * 1000)
                self._flip(move_id, slug, source, target, method, freeze_ms)
        # Flipped: the migration lock no longer matters (and a database being renamed
        # must have no connection left, this one included).
        self._cleanup(move_id, source, target)
        copy = self._keep_source_copy(move_id, source)
        self._record(move_id, MovePhase.DONE, finished_at=func.now(), source_copy=copy)

    # phases ----------------------------------------------------------------------------

    def _hold_migration_lock(self, conn: Connection, slug: str, source: _Place) -> None:
        """The tenant's migration lock, held on ``conn`` (session level) for the move."""
        key = lock_key(self.db.version_table, source.schema or self.db.version_table_schema)
        got = conn.execute(
            text("SELECT pg_try_advisory_lock(:c, :k)"), {"c": LOCK_CLASS, "k": key}
        ).scalar()
        conn.commit()
        if not got:
            raise MoveError(
                f"tenant {slug}'s migration lock is held (a migration, or another move of "
                "it, is running); try again when it ends"
            )

    def _check_at_head(self, slug: str, source: _Place) -> None:
        heads = Migrator(self.db, source.url).heads()
        table = f"{q(source.schema)}.{self.db.version_table}" if source.schema else None
        with self._connect(source.url) as conn:
            if table is None:
                current = set(Migrator(self.db, source.url).current(conn))
            else:
                current = set(conn.execute(text(f"SELECT version_num FROM {table}")).scalars())
        if current != set(heads):
            raise MoveError(
                f"tenant {slug} is not at head ({', '.join(sorted(current)) or 'no revision'} "
                f"!= {', '.join(heads)}): migrate it first (`db {self.db.name} tenants "
                "migrate`); a move copies no DDL"
            )

    def _tables(self, conn: Connection, place: _Place, kinds: str = "'r'") -> list[str]:
        rows = conn.execute(
            text(
                "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                f"WHERE c.relkind IN ({kinds}) AND {place.tables_filter()} "
                "AND c.relname <> :marker ORDER BY 1, 2"
            ),
            {"schema": place.schema, "marker": MARKER},
        )
        return [f"{q(s)}.{q(t)}" for s, t in rows]

    def _check_replica_identity(self, source: _Place) -> None:
        with self._connect(source.url) as conn:
            rows = conn.execute(
                text(
                    "SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c "
                    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                    f"WHERE c.relkind = 'r' AND {source.tables_filter()} "
                    "AND c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM "
                    "pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)"
                ),
                {"schema": source.schema},
            ).scalars()
            missing = sorted(rows)
        if missing:
            raise MoveError(
                f"tables without a primary key cannot replicate updates: {', '.join(missing)}; "
                "add one (or ALTER TABLE ... REPLICA IDENTITY FULL), or use --method dump"
            )

    def _copy_tables(self, target: _Place, source: _Place) -> None:
        """The tenant's tables on the target, made by its migrations, then emptied."""
        if target.schema is not None:
            from db_kit.migrations.schema_tenants import SchemaTenantMigrator

            with self._connect(target.url) as conn, conn.begin():
                exists = conn.execute(
                    text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": target.schema}
                ).first()
                if exists is not None:
                    self._refuse_unless_empty(conn, target)
                    conn.execute(text(f"DROP SCHEMA {q(target.schema)} CASCADE"))
                conn.execute(text(f"CREATE SCHEMA {q(target.schema)}"))
                SchemaTenantMigrator(self.db, target.url)._upgrade_in_transaction(
                    conn, target.schema
                )
                self._empty_and_mark(conn, target)
        else:
            name = target.url.database
            assert name is not None
            with self._connect(self._server_url(target.server), autocommit=True) as admin:
                exists = admin.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": name}
                ).first()
                if exists is not None:
                    with self._connect(target.url) as conn:
                        self._refuse_unless_empty(conn, target)
                    self._engine(target.url).dispose()
                    admin.execute(text(f"DROP DATABASE {q(name)} WITH (FORCE)"))
                admin.execute(text(f"CREATE DATABASE {q(name)}"))
            Migrator(self.db, target.url).upgrade()
            with self._connect(target.url) as conn, conn.begin():
                self._empty_and_mark(conn, target)
        with self._connect(source.url) as conn, conn.begin():
            conn.execute(
                text(f"CREATE TABLE IF NOT EXISTS {source.marker} (token text PRIMARY KEY)")
            )

    def _refuse_unless_empty(self, conn: Connection, place: _Place) -> None:
        for table in self._tables(conn, place):
            if table.endswith(f".{q(self.db.version_table)}") or table.endswith(
                f".{self.db.version_table}"
            ):
                continue
            if conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {table})")).scalar():
                raise MoveError(
                    f"the target server {place.server} already holds data in {table}: "
                    "not this move's; drop it by hand if it is a leftover"
                )

    def _empty_and_mark(self, conn: Connection, place: _Place) -> None:
        tables = self._tables(conn, place)
        if tables:
            conn.execute(text(f"TRUNCATE {', '.join(tables)}"))
        conn.execute(text(f"CREATE TABLE IF NOT EXISTS {place.marker} (token text PRIMARY KEY)"))

    def _names(self, move_id: int) -> str:
        return f"db_kit_move_{move_id}"

    def _sync(self, move_id: int, source: _Place, target: _Place) -> None:
        name = self._names(move_id)
        with self._connect(source.url, autocommit=True) as conn:
            if (
                conn.execute(
                    text("SELECT 1 FROM pg_publication WHERE pubname = :n"), {"n": name}
                ).first()
                is None
            ):
                what = f"TABLES IN SCHEMA {q(source.schema)}" if source.schema else "ALL TABLES"
                conn.execute(text(f"CREATE PUBLICATION {q(name)} FOR {what}"))
            published = len(self._tables(conn, source)) + 1  # and the marker
        with self._connect(target.url, autocommit=True) as conn:
            if (
                conn.execute(
                    text("SELECT 1 FROM pg_subscription WHERE subname = :n"), {"n": name}
                ).first()
                is None
            ):
                _create_subscription(conn, name, source)
            deadline = time.monotonic() + self.sync_timeout
            while True:
                ready, total = conn.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE r.srsubstate = 'r'), count(*) "
                        "FROM pg_subscription_rel r JOIN pg_subscription s "
                        "ON s.oid = r.srsubid WHERE s.subname = :n"
                    ),
                    {"n": name},
                ).one()
                if (
                    total >= published
                    and ready == total
                    and self._lag(source, name) <= CAUGHT_UP_BYTES
                ):
                    return
                if time.monotonic() > deadline:
                    raise MoveError(
                        f"the copy to {target.server} did not catch up within "
                        f"{self.sync_timeout:g} s ({ready} of {total} tables ready)"
                    )
                time.sleep(POLL * 2)

    def _lag(self, source: _Place, slot: str) -> int:
        with self._connect(source.url) as conn:
            lag = conn.execute(
                text(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) "
                    "FROM pg_replication_slots WHERE slot_name = :s"
                ),
                {"s": slot},
            ).scalar()
        return int(lag) if lag is not None else 1 << 62

    def _freeze(self, slug: str, source: _Place) -> None:
        """Refuse writes to the tenant's source tables; waits for the writers in flight."""
        message = f"tenant {slug} is moving: writes are paused".replace("'", "''")
        with self._connect(source.url) as conn:
            set_migration_timeouts(conn, self.settings)
            conn.commit()

            def attempt() -> None:
                with conn.begin():
                    conn.execute(
                        text(
                            f"CREATE OR REPLACE FUNCTION {source.function}() RETURNS trigger "
                            "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION USING ERRCODE = "
                            f"'{FROZEN_SQLSTATE}', MESSAGE = '{message}'; END $$"
                        )
                    )
                    for table in self._tables(conn, source):
                        conn.execute(text(f"DROP TRIGGER IF EXISTS {FREEZE_TRIGGER} ON {table}"))
                        conn.execute(
                            text(
                                f"CREATE TRIGGER {FREEZE_TRIGGER} BEFORE INSERT OR UPDATE OR "
                                f"DELETE OR TRUNCATE ON {table} FOR EACH STATEMENT "
                                f"EXECUTE FUNCTION {source.function}()"
                            )
                        )

            with_lock_retries(
                attempt, conn=conn, url=source.url, settings=self.settings,
                what=lambda: f"freezing tenant {slug}",
            )  # fmt: skip

    def _unfreeze(self, source: _Place) -> None:
        with self._connect(source.url) as conn, conn.begin():
            for table in self._tables(conn, source):
                conn.execute(text(f"DROP TRIGGER IF EXISTS {FREEZE_TRIGGER} ON {table}"))
            conn.execute(text(f"DROP FUNCTION IF EXISTS {source.function}()"))
            conn.execute(text(f"DROP TABLE IF EXISTS {source.marker}"))

    def _drain(self, source: _Place, target: _Place) -> None:
        token = uuid.uuid4().hex
        with self._connect(source.url) as conn, conn.begin():
            conn.execute(text(f"INSERT INTO {source.marker} (token) VALUES (:t)"), {"t": token})
        deadline = time.monotonic() + self.drain_timeout
        with self._connect(target.url) as conn:
            while (
                conn.execute(
                    text(f"SELECT 1 FROM {target.marker} WHERE token = :t"), {"t": token}
                ).first()
                is None
            ):
                conn.rollback()
                if time.monotonic() > deadline:
                    raise MoveError(
                        f"the last writes did not reach {target.server} within "
                        f"{self.drain_timeout:g} s (the subscription may be failing: see "
                        "the target server's log)"
                    )
                time.sleep(POLL)

    def _copy_rows(self, source: _Place, target: _Place) -> None:
        """The dump method: every table copied while frozen, parents before children."""
        with self._connect(source.url) as src, self._connect(target.url) as dst:
            tables = self._in_dependency_order(src, source)
            with dst.begin():
                if tables:
                    dst.execute(text(f"TRUNCATE {', '.join(tables)}"))
                src_raw = src.connection.dbapi_connection
                dst_raw = dst.connection.dbapi_connection
                assert isinstance(src_raw, psycopg.Connection)
                assert isinstance(dst_raw, psycopg.Connection)
                with src_raw.cursor() as out_cursor, dst_raw.cursor() as in_cursor:
                    for table in tables:
                        with (
                            out_cursor.copy(f"COPY {table} TO STDOUT (FORMAT BINARY)") as out,
                            in_cursor.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as into,
                        ):
                            for chunk in out:
                                into.write(chunk)
            src.rollback()

    def _in_dependency_order(self, conn: Connection, place: _Place) -> list[str]:
        tables = self._tables(conn, place)
        edges = conn.execute(
            text(
                "SELECT quote_ident(cn.nspname) || '.' || quote_ident(c.relname), "
                "quote_ident(pn.nspname) || '.' || quote_ident(p.relname) "
                "FROM pg_catalog.pg_constraint k "
                "JOIN pg_catalog.pg_class c ON c.oid = k.conrelid "
                "JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace "
                "JOIN pg_catalog.pg_class p ON p.oid = k.confrelid "
                "JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace "
                "WHERE k.contype = 'f'"
            )
        ).all()
        parents: dict[str, set[str]] = {t: set() for t in tables}
        for child, parent in edges:
            if child in parents and parent in parents and child != parent:
                parents[child].add(parent)
        ordered: list[str] = []
        while parents:
            free = sorted(t for t, ps in parents.items() if not ps)
            if not free:  # a cycle: PostgreSQL checks each COPY's rows; take any next
                free = [sorted(parents)[0]]
            for table in free:
                ordered.append(table)
                del parents[table]
            for ps in parents.values():
                ps.difference_update(free)
        return ordered

    def _sequences(self, source: _Place, target: _Place) -> None:
        """Every sequence on the target at least where the source's is (logical replication
        does not carry them)."""
        with self._connect(source.url) as src:
            values = [
                (seq, *src.execute(text(f"SELECT last_value, is_called FROM {seq}")).one())
                for seq in self._tables(src, source, kinds="'S'")
            ]
            src.rollback()
        with self._connect(target.url) as dst, dst.begin():
            for seq, last, called in values:
                dst.execute(
                    text(
                        f"SELECT setval(:seq, GREATEST(:v, (SELECT last_value FROM {seq})), "
                        f"(:called OR (SELECT is_called FROM {seq})))"
                    ),
                    {"seq": seq, "v": last, "called": called},
                )

    def _flip(
        self, move_id: int, slug: str, source: _Place, target: _Place, method: MoveMethod,
        freeze_ms: int,
    ) -> None:  # fmt: skip
        t, m = self.tenant_model, self.move_model
        with self._registry() as conn, conn.begin():
            moved = conn.execute(
                update(t)
                .where(t.slug == slug, func.coalesce(t.server, self.home) == source.server)
                .values(server=target.server, placement_version=t.placement_version + 1)
            ).rowcount
            if moved != 1:
                raise MoveError(
                    f"the registry no longer places tenant {slug} on {source.server}; "
                    "someone changed it during the move"
                )
            conn.execute(
                update(m)
                .where(m.id == move_id)
                .values(phase=MovePhase.FLIPPED.value, error=None, freeze_ms=freeze_ms)
            )
            self._audit(
                conn, slug, "move",
                {"from": source.server, "to": target.server, "method": method.value,
                 "freeze_ms": freeze_ms, "move": move_id},
            )  # fmt: skip
        if self.on_phase is not None:
            self.on_phase(MovePhase.FLIPPED, "")

    def _drop_replication(self, move_id: int, source: _Place, target: _Place) -> None:
        name = self._names(move_id)
        with contextlib.suppress(DBAPIError), self._connect(target.url, autocommit=True) as conn:
            if (
                conn.execute(
                    text("SELECT 1 FROM pg_subscription WHERE subname = :n"), {"n": name}
                ).first()
                is not None
            ):
                try:
                    conn.execute(text(f"DROP SUBSCRIPTION {q(name)}"))
                except DBAPIError:  # the source unreachable: drop it here, the slot below
                    conn.execute(text(f"ALTER SUBSCRIPTION {q(name)} DISABLE"))
                    conn.execute(text(f"ALTER SUBSCRIPTION {q(name)} SET (slot_name = NONE)"))
                    conn.execute(text(f"DROP SUBSCRIPTION {q(name)}"))
        with self._connect(source.url, autocommit=True) as conn:
            conn.execute(text(f"DROP PUBLICATION IF EXISTS {q(name)}"))
            deadline = time.monotonic() + 10
            while True:
                slot = conn.execute(
                    text("SELECT active FROM pg_replication_slots WHERE slot_name = :n"),
                    {"n": name},
                ).first()
                if slot is None:
                    break
                if not slot.active:
                    conn.execute(text("SELECT pg_drop_replication_slot(:n)"), {"n": name})
                    break
                if time.monotonic() > deadline:
                    raise MoveError(f"replication slot {name} on {source.server} stays in use")
                time.sleep(POLL)

    def _cleanup(self, move_id: int, source: _Place, target: _Place) -> None:
        self._drop_replication(move_id, source, target)
        with self._connect(target.url) as conn, conn.begin():
            conn.execute(text(f"DROP TABLE IF EXISTS {target.marker}"))

    def _keep_source_copy(self, move_id: int, source: _Place) -> str:
        """Rename the (frozen) source out of the way: a session still routed there fails
        (and is retried on the target) instead of reading it."""
        suffix = f"__moved_{move_id}"
        if source.schema is not None:
            copy = f"{source.schema[: 63 - len(suffix)]}{suffix}"
            with self._connect(source.url) as conn, conn.begin():
                exists = conn.execute(
                    text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": source.schema}
                ).first()
                if exists is not None:
                    conn.execute(text(f"DROP TABLE IF EXISTS {source.marker}"))
                    conn.execute(text(f"ALTER SCHEMA {q(source.schema)} RENAME TO {q(copy)}"))
            return copy
        name = source.url.database
        assert name is not None
        copy = f"{name[: 63 - len(suffix)]}{suffix}"
        self._engine(source.url).dispose()
        with self._connect(self._server_url(source.server), autocommit=True) as admin:
            if (
                admin.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": name}
                ).first()
                is not None
            ):
                admin.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :d AND pid <> pg_backend_pid()"
                    ),
                    {"d": name},
                )
                admin.execute(text(f"ALTER DATABASE {q(name)} RENAME TO {q(copy)}"))
        return copy

    # abort and clean-up ----------------------------------------------------------------

    def abort(self, slug: str) -> MoveReport:
        """Roll back ``slug``'s unfinished move: writes resume on the source (the freeze
        goes first), replication objects and the target's copy are dropped. A move past
        its flip cannot be rolled back (move the tenant back instead)."""
        slug = validate_tenant_slug(slug)
        started = time.perf_counter()
        try:
            with self._registry() as conn:
                tenant = self._tenant(conn, slug)
                row = self._open_move(conn, slug)
                conn.rollback()
            if row is None:
                raise MoveError(f"tenant {slug} has no unfinished move")
            if _phase_index(row.phase) >= _phase_index(MovePhase.FLIPPED):
                raise MoveError(
                    f"move #{row.id} of tenant {slug} has flipped: it is served from "
                    f"{row.target}; finish it by running the move again, or move it back "
                    f"with --to {row.source}"
                )
            source = self._place(row.source, tenant.location)
            target = self._place(row.target, tenant.location)
            self._unfreeze(source)  # writes first
            self._drop_replication(row.id, source, target)
            self._drop_target(target)
            self._record(row.id, MovePhase.ABORTED, finished_at=func.now())
        finally:
            self.close()
        return MoveReport(
            row.id, slug, row.source, row.target, row.method, MovePhase.ABORTED.value,
            None, time.perf_counter() - started, None,
        )  # fmt: skip

    def _drop_target(self, target: _Place) -> None:
        if target.schema is not None:
            with self._connect(target.url) as conn, conn.begin():
                conn.execute(text(f"DROP SCHEMA IF EXISTS {q(target.schema)} CASCADE"))
            return
        name = target.url.database
        assert name is not None
        self._engine(target.url).dispose()
        with self._connect(self._server_url(target.server), autocommit=True) as admin:
            admin.execute(text(f"DROP DATABASE IF EXISTS {q(name)} WITH (FORCE)"))

    def drop_source_copy(self, slug: str) -> list[str]:
        """Drop the source copies kept by ``slug``'s finished moves (irreversible)."""
        slug = validate_tenant_slug(slug)
        m = self.move_model
        dropped: list[str] = []
        try:
            with self._registry() as conn:
                rows = list(
                    conn.execute(
                        select(*_columns(m)).where(
                            m.tenant_slug == slug,
                            m.phase == MovePhase.DONE.value,
                            m.source_copy.is_not(None),
                            m.copy_dropped_at.is_(None),
                        )
                    )
                )
                conn.rollback()
            for row in rows:
                copy = row.source_copy
                assert copy is not None
                server_url = self._server_url(row.source)
                if self.db.tenancy is not None:
                    with self._connect(server_url) as conn, conn.begin():
                        conn.execute(text(f"DROP SCHEMA IF EXISTS {q(copy)} CASCADE"))
                else:
                    with self._connect(server_url, autocommit=True) as admin:
                        admin.execute(text(f"DROP DATABASE IF EXISTS {q(copy)} WITH (FORCE)"))
                with self._registry() as conn, conn.begin():
                    conn.execute(update(m).where(m.id == row.id).values(copy_dropped_at=func.now()))
                dropped.append(f"{row.source}:{copy}")
        finally:
            self.close()
        return dropped


def _columns(model: type[Any]) -> list[Any]:
    """The columns of ``model``'s table, for Core selects of whole rows."""
    return list(model.__table__.columns)


def _create_subscription(conn: Connection, name: str, source: _Place) -> None:
    """``CREATE SUBSCRIPTION`` on ``conn`` to ``source``'s publication ``name``.

    The statement carries the source's password (a utility statement takes no bound
    parameters): it goes straight to the driver, past SQLAlchemy's statement log and echo,
    and a failure is reported by the server's words alone, never with the statement.
    """
    info = conninfo(source.url).replace("'", "''")
    raw = conn.connection.dbapi_connection
    assert isinstance(raw, psycopg.Connection)
    try:
        with raw.cursor() as cursor:
            cursor.execute(
                f"CREATE SUBSCRIPTION {q(name)} CONNECTION '{info}' "
                f"PUBLICATION {q(name)} WITH (slot_name = '{name}')"
            )
    except psycopg.Error as exc:
        raise MoveError(
            f"the target could not subscribe to {source.server}: {first_line(exc)} (the "
            "target server connects to the source with the source's URL: check that it can "
            "reach that host and port and that the role may replicate)"
        ) from None
