"""Schema-per-tenant: provision, drop and migrate tenant schemas.

Each tenant's tables live in ``<prefix><slug>`` with its own ``alembic_version``. A tenant is
migrated in one transaction (``SET LOCAL search_path`` to its schema, so hand-written SQL
in revisions lands there too, and nothing outlives the transaction on the connection), under
a per-tenant advisory lock. ``migrate_all`` skips tenants already at head after one look
at the version tables, then migrates the rest, in this process and (when worth it) helper
processes: Alembic's command API keeps module-level state and is not thread-safe.

A tenant's upgrade is the same SQL in every schema when its revisions are plain ``op``
calls: such a path is rendered once (Alembic's offline mode, the live dialect) and replayed
per schema in one round trip per revision, behind a guard that takes the tenant's lock and
checks its version in the same transaction (``_upgrade``). Whatever needs the connection
while it runs (data read in Python) runs through Alembic online, tenant by tenant.

A fleet (``<PREFIX>SERVERS``): a tenant's schema lives in the database of its server's
primary (the registry row's ``server``; NULL: the home server), the registry only on the
home server. ``migrate_all`` handles the servers concurrently (one thread each), each with
its own connection, its own ``ALL_TENANTS_LOCK`` and its own helper processes; upgrades in
this process take turns (``_ALEMBIC``). A server that cannot be reached fails its tenants
only, each with the reason naming the server; a rerun resumes.
"""

from __future__ import annotations

import ast
import logging
import multiprocessing
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationStep
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Table, case, delete, func, insert, inspect, select, text, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import Update

from db_kit.config import DatabaseConfig, SchemaTenancy
from db_kit.errors import first_line, sqlstate
from db_kit.migrations.env import (
    LOCK_CLASS,
    advisory_lock,
    lock_key,
    migration_lock,
    render_upgrades,
    render_version_table,
)
from db_kit.migrations.locks import (
    MigrationLockTimeoutError,
    set_migration_timeouts,
    with_lock_retries,
)
from db_kit.migrations.migrator import Migrator, ResetReport
from db_kit.migrations.outcome import (
    ALEMBIC_LOCK,
    Outcome,
    Placement,
    TenantReport,
    select_tenants,
)
from db_kit.sql import quote_identifier
from db_kit.tenancy.registry import TenantRegistryMixin, TenantStatus
from db_shared.errors import ConfigurationError, DuplicateEntryError, NotFoundError
from db_shared.tenancy import validate_tenant_slug

log = logging.getLogger(__name__)
ALL_TENANTS_LOCK = "tenants"
# A helper process costs seconds to start (imports): worth it only for enough tenants.
TENANTS_PER_HELPER = 100
HELPER_BATCH = 20
# What a spawned helper takes to start (importing SQLAlchemy, Alembic, the models), and how
# long this process first migrates alone to learn what a tenant costs (``_ServerRun._probe``).
HELPER_START_SECONDS = 2.0
PROBE_TENANTS = 20
PROBE_SECONDS = 0.3
# One upgrade at a time in this process (the per-server threads of ``migrate_all`` take
# turns; helper processes run their own).
_ALEMBIC = ALEMBIC_LOCK


class TenantExistsError(DuplicateEntryError):
    """``tenants create`` for a slug (or schema) that is already there."""


@dataclass(frozen=True)
class TenantRow:
    slug: str
    schema: str
    status: str
    revision: str | None
    last_error: str | None
    # Its server, as the registry records it (None: the home server).
    server: str | None = None


TenantResult = TenantReport  # a schema tenant's report

# Revision ids written into replayed SQL as literals.
_REVISION_ID = re.compile(r"[A-Za-z0-9_]{1,32}")
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Stand-ins in the registry update rendered once (neither is a valid slug nor revision).
_SLUG_MARK = "DB-KIT-SLUG"
_REVISION_MARK = "DB-KIT-REVISION"
_LOCK_AND_PATH = text(
    "SELECT pg_try_advisory_xact_lock(:c, :k), set_config('search_path', :p, true)"
)
# The first statement of a replayed upgrade: the tenant's lock without waiting, its schema
# on the search path, and the version the replay starts from, each read after the lock
# (plpgsql: a new snapshot per statement). Either missing: the transaction is rolled back
# and the tenant migrated through Alembic (which waits for the lock). Literals only.
_GUARD = """DO $db_kit$
BEGIN
  IF NOT pg_try_advisory_xact_lock({c}, {k}) THEN
    RAISE EXCEPTION 'tenant lock busy' USING ERRCODE = '{busy}';
  END IF;
  PERFORM set_config('search_path', '{path}', true);
  IF (SELECT array_agg(version_num::text) FROM {table}) IS DISTINCT FROM ARRAY['{before}']::text[] THEN
    RAISE EXCEPTION 'tenant version moved' USING ERRCODE = '{moved}';
  END IF;
END
$db_kit$;"""
_LOCK_BUSY = "DBK01"
_VERSION_MOVED = "DBK02"


class _NotReplayed(Exception):
    """The replay's guard failed (lock busy, version moved): rolled back, run online."""


@dataclass(frozen=True)
class _Replay:
    """A tenant upgrade from ``before`` to head, rendered to SQL once per migrator and
    replayed in each tenant's schema (``SchemaTenantMigrator._replay``)."""

    before: str | None
    head: str
    revisions: tuple[str, ...]
    # Per revision, its statements; the version bookkeeping is appended to the last one.
    sql: tuple[str, ...]


class SchemaTenantMigrator:
    """Tenant operations of one schema-per-tenant database."""

    def __init__(self, db: DatabaseConfig, url: URL | None = None) -> None:
        if db.tenancy is None:
            raise ConfigurationError(f"The {db.name} database is not schema-per-tenant.")
        self.db = db
        self.tenancy: SchemaTenancy = db.tenancy
        self.migrator = Migrator(db, url)
        # Revisions applied by the current upgrade, per thread (for failure messages).
        self._local = threading.local()
        # (revision before, server version) -> the upgrade to head rendered to SQL, or
        # None when it must run online through Alembic (``_replay``).
        self._replays: dict[tuple[str | None, Any], _Replay | None] = {}
        self._record_sql: str | None = None

    @cached_property
    def placement(self) -> Placement:
        """The servers of the fleet; the home one is this migrator's URL."""
        return Placement.of(self.migrator.settings, self.migrator.url)

    def server_of(self, row: TenantRow) -> str:
        """The name of the server holding ``row``'s schema."""
        return self.placement.name(row.server)

    @contextmanager
    def connect_server(self, server: str) -> Iterator[Connection]:
        """A migration connection to ``server``'s primary (the home one: ``connect()``)."""
        if server == self.placement.home:
            with self.connect() as conn:
                yield conn
            return
        url = self.placement.url(server)
        with Migrator(self.db, url, settings=self.migrator.settings).connect() as conn:
            yield conn

    @cached_property
    def script(self) -> ScriptDirectory:
        """Revisions read once per migrator (so once per worker process)."""
        return ScriptDirectory.from_config(self.migrator.alembic_config())

    @property
    def model(self) -> type[TenantRegistryMixin]:
        """The registry's tenant model (the kit's typed contract)."""
        return self.tenancy.model

    @property
    def table(self) -> Table:
        table: Table = self.model.__table__  # type: ignore[attr-defined]
        return table

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self.migrator.connect() as conn:
            yield conn

    def head(self) -> str:
        heads = self.migrator.heads()
        if len(heads) != 1:
            raise ConfigurationError(f"{self.db.name} has {len(heads)} heads; merge them first.")
        return heads[0]

    # registry ------------------------------------------------------------------------

    def registry_ready(self, conn: Connection) -> bool:
        """Whether the registry table exists (the registry has been migrated)."""
        return inspect(conn).has_table(self.table.name, schema=self.table.schema)

    def tenants(self, conn: Connection) -> list[TenantRow]:
        t = self.model
        rows = conn.execute(
            select(t.slug, t.schema_name, t.status, t.revision, t.last_error, t.server).order_by(
                t.server.nulls_first(), t.slug
            )
        )
        return [TenantRow(*row) for row in rows]

    def get(self, conn: Connection, slug: str) -> TenantRow:
        validate_tenant_slug(slug)
        t = self.model
        row = conn.execute(
            select(t.slug, t.schema_name, t.status, t.revision, t.last_error, t.server).where(
                t.slug == slug
            )
        ).first()
        if row is None:
            raise NotFoundError("tenant", slug)
        return TenantRow(*row)

    def with_version_table(self, conn: Connection, schemas: list[str]) -> list[str]:
        """Those of ``schemas`` that have a version table: one catalog query."""
        if not schemas:
            return []
        rows = conn.execute(
            text(
                "SELECT n.nspname FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relname = :t AND c.relkind IN ('r', 'p') AND n.nspname = ANY(:s)"
            ),
            {"t": self.db.version_table, "s": schemas},
        )
        return [row[0] for row in rows]

    def versions(self, conn: Connection, schemas: list[str]) -> dict[str, str | None]:
        """Current revision of each schema: one catalog query, then one UNION ALL query."""
        present = self.with_version_table(conn, schemas)
        found: dict[str, str | None] = dict.fromkeys(schemas)
        if present:
            union = " UNION ALL ".join(
                f"SELECT {i} AS i, version_num FROM {quote_identifier(s)}.{self.db.version_table}"
                for i, s in enumerate(present)
            )
            for i, version in conn.execute(text(union)):
                found[present[i]] = version
        return found

    # provisioning ----------------------------------------------------------------------

    def create(
        self,
        slug: str,
        name: str | None = None,
        region: str | None = None,
        server: str | None = None,
    ) -> TenantResult:
        """Register the tenant, create its schema on its server and migrate it.

        ``server``: a server of ``<PREFIX>SERVERS`` (``ConfigurationError`` naming the known
        ones otherwise); None: the placement policy's choice (``Placement.choose``). On the
        home server it is one transaction (registry row, schema, tables). On another server
        the row is registered first (provisioning), the schema made and migrated there in
        one transaction, then the row turns active; when that fails the row is removed, so
        nothing is left half made. If the home server fails after the schema was made, the
        row stays provisioning and ``tenants migrate --tenant SLUG`` finishes it.
        """
        validate_tenant_slug(slug)
        schema = self.tenancy.schema_for(slug)
        started = time.perf_counter()
        placement = self.placement
        with self.connect() as conn:
            target = placement.choose(server, lambda: placement.count_tenants(conn, self.model))
            if conn.in_transaction():
                conn.rollback()
            if target != placement.home:
                after = self._create_elsewhere(conn, slug, name, region, schema, target)
                return TenantResult(
                    slug, schema, None, after, Outcome.MIGRATED, None,
                    time.perf_counter() - started,
                )  # fmt: skip
            try:
                with conn.begin():
                    self._insert(conn, slug, name, region, schema, placement.stored(target))
                    conn.execute(text(f"CREATE SCHEMA {quote_identifier(schema)}"))
                    after = self._upgrade(conn, schema, None, record=slug, fresh=True)
            except DBAPIError as exc:
                self._exists(exc, slug, schema, target)
                raise
        return TenantResult(
            slug, schema, None, after, Outcome.MIGRATED, None, time.perf_counter() - started
        )

    def _insert(
        self,
        conn: Connection,
        slug: str,
        name: str | None,
        region: str | None,
        schema: str,
        server: str | None,
    ) -> None:
        conn.execute(
            insert(self.model).values(
                {
                    self.model.slug: slug,
                    self.model.name: name or slug,
                    self.model.schema_name: schema,
                    self.model.region: region,
                    self.model.server: server,
                }
            )
        )

    def _exists(self, exc: DBAPIError, slug: str, schema: str, server: str) -> None:
        """Raise ``TenantExistsError`` when ``exc`` says the slug or schema is taken."""
        state = sqlstate(exc)
        if state == "23505":  # unique_violation: slug or schema already registered
            raise TenantExistsError(
                table=self.table.name,
                columns=("slug",),
                message=f"tenant {slug} already exists (schema {schema}); pick another "
                f"slug, or drop it first with `db {self.db.name} tenants drop {slug}`.",
            ) from None
        if state == "42P06":  # duplicate_schema: a schema nobody registered
            on = f" on server {server}" if len(self.placement.primaries) > 1 else ""
            raise TenantExistsError(
                table=self.table.name,
                columns=("schema_name",),
                message=f"schema {schema} already exists{on} but no tenant {slug} is "
                "registered for it (left by a registry reset or made by hand); "
                f'drop it (DROP SCHEMA "{schema}" CASCADE) or pick another slug.',
            ) from None

    def _create_elsewhere(
        self,
        home: Connection,
        slug: str,
        name: str | None,
        region: str | None,
        schema: str,
        server: str,
    ) -> str | None:
        """``create`` on a server other than the home one (see there for the order)."""
        try:
            with home.begin():
                self._insert(home, slug, name, region, schema, server)
        except DBAPIError as exc:
            self._exists(exc, slug, schema, server)
            raise
        try:
            with self.connect_server(server) as conn, conn.begin():
                conn.execute(text(f"CREATE SCHEMA {quote_identifier(schema)}"))
                after = self._upgrade(conn, schema, None, record=None, fresh=True)
        except Exception as exc:
            # The target's transaction was rolled back: nothing of the tenant is there.
            try:
                if home.in_transaction():
                    home.rollback()
                with home.begin():
                    home.execute(delete(self.model).where(self.model.slug == slug))
            except DBAPIError as forget_exc:  # pragma: no cover - the home server failed too
                log.warning("could not unregister %s: %s", slug, forget_exc)
            if isinstance(exc, DBAPIError):
                self._exists(exc, slug, schema, server)
            raise
        try:
            with home.begin():
                self._record(home, slug, after, None)
        except DBAPIError as exc:  # pragma: no cover - the home server failed meanwhile
            raise ConfigurationError(
                f"tenant {slug}'s schema {schema} was made and migrated on server {server}, "
                f"but the registry could not be updated ({first_line(exc)}): it stays "
                f"provisioning; run `db {self.db.name} tenants migrate --tenant {slug}` "
                "to finish it."
            ) from exc
        return after

    def reset(self) -> ResetReport:
        """Development: the database's reset (default schema and every registered tenant
        schema dropped, the registry kept), then every tenant migrated again from empty."""
        report = self.migrator.reset()
        # Tenants on the fleet's other servers: their schemas emptied there too.
        with self.connect() as conn:
            rows = self.tenants(conn)
        for server, placed in self.by_server(rows).items():
            if server == self.placement.home:
                continue
            with self.connect_server(server) as conn, conn.begin():
                for row in placed:
                    schema = quote_identifier(row.schema)
                    conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    conn.execute(text(f"CREATE SCHEMA {schema}"))
        rebuilt: list[str] = []
        failed: list[str] = []
        for result in self.migrate_all(verify=True):
            (failed if result.failed else rebuilt).append(result.slug)
        return replace(report, tenants_rebuilt=tuple(rebuilt), tenants_failed=tuple(failed))

    def drop(self, slug: str) -> None:
        """Drop the tenant's schema and its registry row (irreversible)."""
        validate_tenant_slug(slug)  # before any connection
        with self.connect() as conn, conn.begin():
            row = self.get(conn, slug)
            server = self.server_of(row)
            drop = text(f"DROP SCHEMA IF EXISTS {quote_identifier(row.schema)} CASCADE")
            if server == self.placement.home:
                conn.execute(drop)
            else:  # its server first: a server down leaves the tenant registered
                with self.connect_server(server) as remote, remote.begin():
                    remote.execute(drop)
            conn.execute(delete(self.model).where(self.model.slug == slug))

    # migrating -----------------------------------------------------------------------

    def _upgrade(
        self,
        conn: Connection,
        schema: str,
        before: str | None,
        *,
        record: str | None,
        fresh: bool = False,
        replay: bool = True,
    ) -> str | None:
        """Upgrade ``schema`` to head in ``conn``'s transaction, under the tenant's advisory
        lock; ``record``: the slug whose registry row is updated in the same transaction.

        ``before`` is the revision the plan saw: when the path from it is replayable
        (``_replay``) and the version table, read under the lock, still says so, the SQL
        rendered once is replayed; otherwise Alembic runs the revisions online. ``fresh``:
        the schema was just created (no version table yet). ``_NotReplayed``: the lock was
        busy or the version moved; the caller rolls back and calls again with ``replay``
        off (Alembic then waits for the lock and starts from the version it finds).
        """
        after = self._replay_in_transaction(conn, schema, before, record, fresh) if replay else None
        if after is not None:
            return after[0]
        with _ALEMBIC:
            version = self._upgrade_in_transaction(conn, schema)
        if record is not None:
            self._record(conn, record, version, None)
        return version

    def _replay(self, conn: Connection, before: str | None) -> _Replay | None:
        """The upgrade from ``before`` to head rendered to SQL (once per migrator, server
        version and starting revision), or None when it must run online."""
        key = (before, conn.dialect.server_version_info)
        if key not in self._replays:
            with _ALEMBIC:  # Alembic's ``op`` proxy is module-level
                if key not in self._replays:
                    self._replays[key] = self._render(conn, before)
        return self._replays[key]

    @cached_property
    def _env_is_shared(self) -> bool:
        """Whether the migrations' ``env.py`` is the shared two lines (``run_env(...)``):
        only then is a rendered upgrade what an online run would do."""
        try:
            tree = ast.parse(Path(self.script.env_py_location).read_text())
        except (OSError, SyntaxError):
            return False
        body = [
            node
            for node in tree.body
            if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
            and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
        ]
        if len(body) != 2:
            return False
        imported, called = body
        return (
            isinstance(imported, ast.ImportFrom)
            and imported.module == "db_kit.migrations.env"
            and [a.name for a in imported.names] == ["run_env"]
            and isinstance(called, ast.Expr)
            and isinstance(called.value, ast.Call)
            and isinstance(called.value.func, ast.Name)
            and called.value.func.id == "run_env"
        )

    def _render(self, conn: Connection, before: str | None) -> _Replay | None:
        """See ``_replay``. Replayable: a linear path of revisions (no merge, no
        ``depends_on``), each ``upgrade()`` pure ``op`` calls that render the same SQL twice
        (``render_upgrades``: no connection, no context, nothing random). Anything else
        (data read in Python, a custom ``env.py``) runs online, tenant by tenant."""
        if not self._env_is_shared:
            return None
        script = self.script
        try:
            path = [
                sc
                for sc in reversed(list(script.iterate_revisions("head", before or "base")))
                if sc is not None and sc.revision != before
            ]
        except Exception as exc:  # a revision these migrations do not know: Alembic says so
            log.info("%s: no path from %s (%s)", self.db.name, before, first_line(exc))
            return None
        previous = before
        for sc in path:
            if (
                sc.down_revision != previous
                or sc.dependencies
                or not _REVISION_ID.fullmatch(sc.revision)
            ):
                return None
            previous = sc.revision
        if not path or (before is not None and not _REVISION_ID.fullmatch(before)):
            return None
        try:
            first = render_upgrades(self.db, conn.dialect, path)
            if render_upgrades(self.db, conn.dialect, path) != first:
                log.info("%s: revisions render differently each time; run online", self.db.name)
                return None
            table = render_version_table(conn.dialect, self.db.version_table)
        except Exception as exc:
            log.info("%s: revisions run online (%s)", self.db.name, first_line(exc))
            return None
        head = path[-1].revision
        version = conn.dialect.identifier_preparer.quote(self.db.version_table)
        if before is None:
            bookkeeping = f"{table}\n\nINSERT INTO {version} (version_num) VALUES ('{head}');"
        else:
            bookkeeping = (
                f"UPDATE {version} SET version_num = '{head}' "
                f"WHERE {version}.version_num = '{before}';"
            )
        sql = [*first[:-1], f"{first[-1]}\n\n{bookkeeping}".strip()]
        return _Replay(before, head, tuple(sc.revision for sc in path), tuple(sql))

    def _replay_in_transaction(
        self,
        conn: Connection,
        schema: str,
        before: str | None,
        record: str | None,
        fresh: bool,
    ) -> tuple[str] | None:
        """``_upgrade`` by replaying rendered SQL: (head,), or None when it cannot (then
        at most the lock has been taken and ``search_path`` set, in the transaction).

        One round trip per revision (simple-query protocol: all its statements at once);
        the lock, ``search_path`` and the version check lead the first (``_GUARD``), the
        version row and the registry row ride with the last. A new schema (``fresh``) takes
        its lock first, waiting if need be.
        """
        if before is None and not fresh:
            return None  # a version table may be missing or empty: Alembic finds out
        if not _SCHEMA_NAME.fullmatch(schema):
            return None  # written into the SQL as a literal: only plain names
        replay = self._replay(conn, before)
        if replay is None:
            return None
        key = lock_key(self.db.version_table, schema)
        quoted = quote_identifier(schema)
        guard = ""
        if fresh:
            locked = conn.execute(_LOCK_AND_PATH, {"c": LOCK_CLASS, "k": key, "p": quoted})
            if not locked.scalar():
                advisory_lock(conn, key, xact=True)
        else:
            assert before is not None
            guard = _GUARD.format(
                c=LOCK_CLASS,
                k=key,
                busy=_LOCK_BUSY,
                path=quoted,
                table=f"{quoted}.{conn.dialect.identifier_preparer.quote(self.db.version_table)}",
                before=before,
                moved=_VERSION_MOVED,
            )
        applied: list[str] = []
        self._local.applied = applied
        last = len(replay.sql) - 1
        for i, (revision, sql) in enumerate(zip(replay.revisions, replay.sql, strict=True)):
            if i == 0 and guard:
                sql = f"{guard}\n\n{sql}"
            if i == last and record is not None:
                sql = f"{sql}\n\n{self._record_replayed(conn, record, replay.head)}"
            if sql:
                try:
                    conn.exec_driver_sql(sql)
                except DBAPIError as exc:
                    if i == 0 and guard and sqlstate(exc) in (_LOCK_BUSY, _VERSION_MOVED):
                        raise _NotReplayed(sqlstate(exc)) from exc
                    raise
            applied.append(revision)
        return (replay.head,)

    def _record_replayed(self, conn: Connection, slug: str, revision: str) -> str:
        """``_record(slug, revision)`` as SQL text (rendered once, literals filled in)."""
        if self._record_sql is None:
            statement = self._record_statement(_SLUG_MARK, _REVISION_MARK, None)
            self._record_sql = (
                str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
                + ";"
            )
        validate_tenant_slug(slug)  # a-z, 0-9 and _: safe inside quotes
        assert _REVISION_ID.fullmatch(revision), revision
        return self._record_sql.replace(f"'{_SLUG_MARK}'", f"'{slug}'").replace(
            f"'{_REVISION_MARK}'", f"'{revision}'"
        )

    def _upgrade_in_transaction(self, conn: Connection, schema: str) -> str | None:
        advisory_lock(conn, lock_key(self.db.version_table, schema), xact=True)
        conn.execute(text(f"SET LOCAL search_path TO {quote_identifier(schema)}"))
        cfg = self.migrator.alembic_config(conn)
        cfg.attributes["tenant_schema"] = schema
        cfg.attributes["applied"] = self._local.applied = []
        script = self.script
        # What alembic.command.upgrade does, minus building a ScriptDirectory (and compiling
        # every revision file) again for each of a thousand tenants.
        with EnvironmentContext(
            cfg,
            script,
            fn=lambda rev, _ctx: _steps_to_head(script, rev),
            as_sql=False,
            starting_rev=None,
            destination_rev="head",
        ):
            script.run_env()
        version: str | None = conn.execute(
            text(f"SELECT version_num FROM {quote_identifier(schema)}.{self.db.version_table}")
        ).scalar()
        return version

    def _record(self, conn: Connection, slug: str, revision: str | None, error: str | None) -> None:
        conn.execute(self._record_statement(slug, revision, error))

    def _record_statement(self, slug: str, revision: str | None, error: str | None) -> Update:
        t = self.model
        values: dict[Any, Any] = {t.last_error: error}
        if error is None:
            # A provisioned tenant becomes active; a suspended one stays suspended.
            status = case(
                (t.status == TenantStatus.PROVISIONING, TenantStatus.ACTIVE.value), else_=t.status
            )
            values.update({t.revision: revision, t.migrated_at: func.now(), t.status: status})
        return update(t).where(t.slug == slug).values(values)

    def _failing_revision(self, before: str | None) -> str:
        """The revision a failed tenant upgrade stopped at: the one after the last applied."""
        path = [
            sc.revision
            for sc in reversed(list(self.script.iterate_revisions("head", before or "base")))
            if sc is not None and sc.revision != before
        ]
        done = len(getattr(self._local, "applied", []))
        if done < len(path):
            sc = self.script.get_revision(path[done])
            return f"revision {path[done]} ({(sc.doc if sc else '') or ''!r})"
        return "a revision"

    def migrate_one(
        self,
        conn: Connection,
        tenant: TenantRow,
        before: str | None,
        registry: Connection | None = None,
    ) -> TenantResult:
        """Migrate one tenant in one transaction; a lock timeout is retried with backoff.

        ``conn`` is a connection to the tenant's server. ``registry``: a connection to the
        home server when that is another one; the outcome is recorded there after the
        upgrade committed (without it, in the upgrade's own transaction).
        """
        started = time.perf_counter()

        record = tenant.slug if registry is None else None

        def attempt() -> str | None:
            try:
                with conn.begin():
                    return self._upgrade(conn, tenant.schema, before, record=record)
            except _NotReplayed:  # rolled back: through Alembic, from where the tenant is
                with conn.begin():
                    return self._upgrade(conn, tenant.schema, before, record=record, replay=False)

        try:
            after = with_lock_retries(
                attempt,
                conn=conn,
                url=self.migrator.url,
                settings=self.migrator.settings,
                what=lambda: f"tenant {tenant.slug} {self._failing_revision(before)}",
            )
        except Exception as exc:
            if isinstance(exc, MigrationLockTimeoutError):
                reason = str(exc)
            else:
                reason = f"{self._failing_revision(before)} failed: {first_line(exc)}"
            reason = reason[:1000]
            if conn.in_transaction():
                conn.rollback()
            self._record_safely(registry if registry is not None else conn, tenant.slug, reason)
            return TenantResult(
                tenant.slug, tenant.schema, before, before, Outcome.FAILED, reason,
                time.perf_counter() - started, os.getpid(),
            )  # fmt: skip
        if registry is not None:
            try:
                with registry.begin():
                    self._record(registry, tenant.slug, after, None)
            except DBAPIError as exc:  # migrated; the next run records it (``_sweep``)
                log.warning("could not record %s's revision: %s", tenant.slug, exc)
        return TenantResult(
            tenant.slug,
            tenant.schema,
            before,
            after,
            Outcome.MIGRATED,
            None,
            time.perf_counter() - started,
            os.getpid(),
        )

    def _record_safely(self, registry: Connection, slug: str, error: str) -> None:
        """Record a failure; a registry that cannot take it is logged, not raised."""
        try:
            if registry.in_transaction():
                registry.rollback()
            with registry.begin():
                self._record(registry, slug, None, error)
        except Exception as record_exc:  # e.g. the registry row is locked too
            log.warning("could not record %s's failure: %s", slug, record_exc)

    def _selected(self, conn: Connection, only: Sequence[str] | None) -> list[TenantRow]:
        """The registry's tenants (``only``: these; ``UnknownTenantsError`` for others)."""
        tenants = self.tenants(conn)
        if only is None:
            return tenants
        wanted = set(
            select_tenants([t.slug for t in tenants], only, f"the {self.db.name} tenant registry")
        )
        return [t for t in tenants if t.slug in wanted]

    def by_server(self, rows: Sequence[TenantRow]) -> dict[str, list[TenantRow]]:
        """``rows`` grouped by server: the home server first, then by name."""
        groups: dict[str, list[TenantRow]] = {}
        for row in rows:
            groups.setdefault(self.server_of(row), []).append(row)
        home = self.placement.home
        return {s: groups[s] for s in sorted(groups, key=lambda s: (s != home, s))}

    def _plan_rows(
        self, conn: Connection, tenants: Sequence[TenantRow], head: str, verify: bool
    ) -> tuple[list[TenantResult], list[tuple[TenantRow, str | None]]]:
        """``plan`` for tenants of one server, ``conn`` connected to it."""
        trusted: set[str] = set()
        if not verify:
            claimed = [
                t.schema
                for t in tenants
                if t.revision is not None
                and t.last_error is None
                and t.status == TenantStatus.ACTIVE
            ]
            trusted = set(self.with_version_table(conn, claimed))
        versions = self.versions(conn, [t.schema for t in tenants if t.schema not in trusted])
        versions.update({t.schema: t.revision for t in tenants if t.schema in trusted})
        done = [
            TenantResult(t.slug, t.schema, head, head, Outcome.UP_TO_DATE)
            for t in tenants
            if versions[t.schema] == head
        ]
        todo = [(t, versions[t.schema]) for t in tenants if versions[t.schema] != head]
        return done, todo

    def fleet_versions(
        self, conn: Connection, rows: Sequence[TenantRow]
    ) -> tuple[dict[str, str | None], dict[str, str]]:
        """(schema -> current revision, server -> why it could not be read) for ``rows``,
        ``conn`` being the home server's: one catalog and one union query per server."""
        versions: dict[str, str | None] = {}
        down: dict[str, str] = {}
        for server, group in self.by_server(rows).items():
            schemas = [r.schema for r in group]
            if server == self.placement.home:
                versions.update(self.versions(conn, schemas))
                continue
            try:
                with self.connect_server(server) as remote:
                    versions.update(self.versions(remote, schemas))
            except Exception as exc:
                down[server] = self._unreachable(server, exc)
                versions.update(dict.fromkeys(schemas))
        return versions, down

    def _unreachable(self, server: str, exc: BaseException) -> str:
        if isinstance(exc, ConfigurationError):
            return str(exc)
        return self.placement.unreachable(server, exc)

    def plan(
        self, conn: Connection, *, verify: bool = True, only: Sequence[str] | None = None
    ) -> tuple[list[TenantResult], list[tuple[TenantRow, str | None]]]:
        """(tenants already at head, tenants to migrate with their current revision).

        ``verify=True`` reads every tenant's version table (the truth; a new backend opens a
        thousand relations in ~0.1 s). ``verify=False`` trusts the registry for tenants it
        records at head with no error (the runner writes that row in the same transaction
        as the upgrade) once one catalog query has confirmed each such schema still has its
        version table; every other tenant's version table is read. The same trust names
        the revision a behind tenant starts from (no error recorded, active): the upgrade
        reads the version table again under the tenant's lock before it changes anything
        (``_upgrade``), and starts from what it finds when the registry was wrong.

        ``conn`` is the home server's (the registry); tenants of other servers are looked
        up there (one connection each); those of a server that does not answer are counted
        as not at head, their revision unknown.

        ``only``: just these slugs (``UnknownTenantsError`` naming any the registry lacks).
        """
        head = self.head()
        done: list[TenantResult] = []
        todo: list[tuple[TenantRow, str | None]] = []
        for server, rows in self.by_server(self._selected(conn, only)).items():
            if server == self.placement.home:
                d, t = self._plan_rows(conn, rows, head, verify)
            else:
                try:
                    with self.connect_server(server) as remote:
                        d, t = self._plan_rows(remote, rows, head, verify)
                except Exception as exc:
                    log.warning("%s", self._unreachable(server, exc))
                    d, t = [], [(r, None) for r in rows]
            done.extend(d)
            todo.extend(t)
        return done, todo

    def migrate_all(
        self,
        *,
        workers: int = 2,
        on_start: Callable[[int], None] | None = None,
        on_result: Callable[[TenantResult], None] | None = None,
        min_per_helper: int | None = None,
        verify: bool = False,
        only: Sequence[str] | None = None,
    ) -> list[TenantResult]:
        """Bring every tenant to head; a failing tenant is reported and left as it was.

        ``workers`` counts this process: it migrates tenants from the first moment, and
        ``workers - 1`` helper processes join once they have started (a spawned interpreter
        spends seconds importing SQLAlchemy and Alembic, during which this process would
        otherwise wait). Helpers take small batches from the same queue, so whoever is
        free takes the next tenants, and helpers are only started when there are at least
        ``min_per_helper`` tenants for each. By default (None) that is ``TENANTS_PER_HELPER``,
        and this process first migrates a few tenants alone to time them: helpers start only
        when the rest would keep it busy for more than twice ``HELPER_START_SECONDS`` per
        helper (a replayed upgrade costs about a millisecond a tenant: a thousand tenants
        are done before a helper could join). Which tenants are at head: see ``plan``
        (``verify=True`` reads every version table instead of trusting the registry).
        ``only``: just these tenants; an unknown slug raises before any is migrated.

        Tenants are grouped by server; each server is handled in its own thread, with its
        own ``ALL_TENANTS_LOCK`` and its own ``workers - 1`` helpers. A server that does not
        answer fails only its tenants (reason: ``server NAME unreachable: ...``, recorded
        in the registry); a rerun resumes. ``on_start`` is called with the growing total
        of tenants to migrate as each server's plan is known (or fails).
        """
        head = self.head()
        self.script.revision_map.heads  # noqa: B018 - read the revisions once, before threads
        with self.connect() as conn:
            groups = self.by_server(self._selected(conn, only))
            conn.rollback()
        results: list[TenantResult] = []
        guard = threading.Lock()
        total = 0

        def started(count: int) -> None:
            nonlocal total
            with guard:
                total += count
                if on_start:
                    on_start(total)

        def report(result: TenantResult) -> None:
            with guard:
                results.append(result)
                if on_result:
                    on_result(result)

        def settled(done: list[TenantResult]) -> None:
            with guard:
                results.extend(done)

        if not groups:
            started(0)
            return results
        run = _ServerRun(self, head, verify, workers, min_per_helper, started, report, settled)
        if len(groups) == 1:
            ((server, rows),) = groups.items()
            run(server, rows)
            return results
        with ThreadPoolExecutor(len(groups), thread_name_prefix="tenants") as threads:
            for future in [threads.submit(run, server, rows) for server, rows in groups.items()]:
                future.result()
        return results


@dataclass
class _ServerRun:
    """``migrate_all`` for the tenants of one server (called in its own thread)."""

    tenants: SchemaTenantMigrator
    head: str
    verify: bool
    workers: int
    min_per_helper: int | None
    started: Callable[[int], None]
    report: Callable[[TenantResult], None]
    settled: Callable[[list[TenantResult]], None]

    def __call__(self, server: str, rows: list[TenantRow]) -> None:
        reported: set[str] = set()

        def report(result: TenantResult) -> None:
            reported.add(result.slug)
            self.report(replace(result, server=server))

        def settled(done: list[TenantResult]) -> None:
            self.settled([replace(r, server=server) for r in done])

        try:
            self._run(server, rows, report, settled)
        except Exception as exc:
            # Connecting, locking or planning failed (or the server went away meanwhile):
            # every tenant of this server not yet reported fails with the reason.
            reason = self.tenants._unreachable(server, exc)
            log.warning("%s", reason)
            left = [r for r in rows if r.slug not in reported]
            self._fail(left, reason, report)

    def _fail(
        self, rows: list[TenantRow], reason: str, report: Callable[[TenantResult], None]
    ) -> None:
        if not rows:
            return
        self.started(len(rows))
        try:
            with self.tenants.connect() as registry, registry.begin():
                for row in rows:
                    self.tenants._record(registry, row.slug, None, reason)
        except Exception as exc:  # the home server is down too: the table still says why
            log.warning("could not record the failures: %s", exc)
        for row in rows:
            report(TenantResult(row.slug, row.schema, None, None, Outcome.FAILED, reason))

    def _run(
        self,
        server: str,
        rows: list[TenantRow],
        report: Callable[[TenantResult], None],
        settled: Callable[[list[TenantResult]], None],
    ) -> None:
        tenants = self.tenants
        remote = server != tenants.placement.home
        with ExitStack() as stack:
            conn = stack.enter_context(tenants.connect_server(server))
            registry = stack.enter_context(tenants.connect()) if remote else None
            stack.enter_context(migration_lock(conn, lock_key(ALL_TENANTS_LOCK, "*")))
            done, todo = tenants._plan_rows(conn, rows, self.head, self.verify)
            conn.rollback()
            self._sweep(registry if registry is not None else conn, rows, done)
            settled(done)
            self.started(len(todo))
            queue = deque(todo)
            per_helper = TENANTS_PER_HELPER if self.min_per_helper is None else self.min_per_helper
            helpers = min(self.workers - 1, len(todo) // max(1, per_helper))
            if helpers > 0 and self.min_per_helper is None:
                helpers = self._probe(queue, helpers, conn, registry, report)
            if helpers <= 0:
                while queue:
                    report(tenants.migrate_one(conn, *queue.popleft(), registry=registry))
                return
            home_url = tenants.migrator.url.render_as_string(hide_password=False)
            server_url = (
                tenants.placement.url(server).render_as_string(hide_password=False)
                if remote
                else None
            )
            with ProcessPoolExecutor(
                max_workers=helpers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(tenants.db, home_url, server_url),
            ) as pool:
                pending: set[Future[list[TenantResult]]] = set()
                while queue or pending:
                    for future in [f for f in pending if f.done()]:
                        pending.discard(future)
                        for result in future.result():
                            report(result)
                    # Two batches queued per helper: one running, one ready to take.
                    while queue and len(pending) < 2 * helpers:
                        size = min(HELPER_BATCH, max(1, len(queue) // (2 * helpers + 1)))
                        batch = [queue.popleft() for _ in range(size)]
                        pending.add(pool.submit(_worker_migrate, batch))
                    if queue:
                        report(tenants.migrate_one(conn, *queue.popleft(), registry=registry))
                    elif pending:
                        wait(pending, return_when=FIRST_COMPLETED)

    def _probe(
        self,
        queue: deque[tuple[TenantRow, str | None]],
        helpers: int,
        conn: Connection,
        registry: Connection | None,
        report: Callable[[TenantResult], None],
    ) -> int:
        """Migrate the first tenants in this process and time them (the first one apart: it
        may render the revisions); return how many of ``helpers`` are worth starting."""
        migrate = self.tenants.migrate_one
        report(migrate(conn, *queue.popleft(), registry=registry))
        began = time.perf_counter()
        done = 0
        while queue and done < PROBE_TENANTS and time.perf_counter() - began < PROBE_SECONDS:
            report(migrate(conn, *queue.popleft(), registry=registry))
            done += 1
        per_tenant = (time.perf_counter() - began) / max(done, 1)
        worth = int(per_tenant * len(queue) / (2 * HELPER_START_SECONDS))
        return min(helpers, worth, len(queue) // TENANTS_PER_HELPER)

    def _sweep(self, registry: Connection, rows: list[TenantRow], done: list[TenantResult]) -> None:
        """Registry rows of tenants found at head that say otherwise (a failure recorded
        while their server was down, a provisioning left by a failed create, a revision
        not recorded) are brought up to date."""
        at_head = {r.slug for r in done}
        stale = [
            r
            for r in rows
            if r.slug in at_head
            and (
                r.revision != self.head
                or r.last_error is not None
                or r.status == TenantStatus.PROVISIONING
            )
        ]
        if not stale:
            return
        try:
            with registry.begin():
                for row in stale:
                    self.tenants._record(registry, row.slug, self.head, None)
        except DBAPIError as exc:
            log.warning("could not bring the registry up to date: %s", exc)


def _steps_to_head(script: ScriptDirectory, current: Any) -> list[MigrationStep]:
    """The upgrade steps from ``current`` to head, through Alembic's public API (what
    ``alembic.command.upgrade`` computes, without reading the revision files again)."""
    revisions = script.iterate_revisions("head", current, implicit_base=True)
    return [
        MigrationStep.upgrade_from_script(script.revision_map, revision)
        for revision in reversed(list(revisions))
        if revision is not None
    ]


# worker processes ----------------------------------------------------------------------

_worker: dict[str, Any] = {}


def _worker_init(db: DatabaseConfig, url: str, server_url: str | None = None) -> None:
    """A helper process: ``url`` is the home server's (the registry), ``server_url`` the
    tenants' server when it is another one."""
    migrator = SchemaTenantMigrator(db, make_url(url))
    _worker["migrator"] = migrator
    settings = migrator.migrator.settings
    target = (
        Migrator(db, make_url(server_url), settings=settings) if server_url else migrator.migrator
    )
    conn = target.engine().connect()
    set_migration_timeouts(conn, settings)
    _worker["conn"] = conn
    _worker["registry"] = None
    if server_url:
        registry = migrator.migrator.engine().connect()
        set_migration_timeouts(registry, settings)
        _worker["registry"] = registry


def _worker_migrate(batch: list[tuple[TenantRow, str | None]]) -> list[TenantResult]:
    migrator: SchemaTenantMigrator = _worker["migrator"]
    conn: Connection = _worker["conn"]
    registry: Connection | None = _worker["registry"]
    return [migrator.migrate_one(conn, tenant, before, registry) for tenant, before in batch]
