"""Schema-per-tenant: provision, drop and migrate tenant schemas.

Each tenant's tables live in ``<prefix><slug>`` with its own ``alembic_version``. A tenant is
migrated in one transaction (``SET LOCAL search_path`` to its schema, so hand-written SQL
in revisions lands there too, and nothing outlives the transaction on the connection), under
a per-tenant advisory lock. ``migrate_all`` skips tenants already at head after one look
at the version tables, then runs the rest in worker processes: Alembic's command API keeps
module-level state and is not thread-safe.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationStep
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Table, case, delete, func, insert, inspect, select, text, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

from db_kit.config import DatabaseConfig, SchemaTenancy
from db_kit.errors import first_line, sqlstate
from db_kit.migrations.env import advisory_lock, lock_key, migration_lock
from db_kit.migrations.locks import (
    MigrationLockTimeoutError,
    set_migration_timeouts,
    with_lock_retries,
)
from db_kit.migrations.migrator import Migrator, ResetReport
from db_kit.migrations.outcome import Outcome, TenantReport, select_tenants
from db_kit.sql import quote_identifier
from db_kit.tenancy.registry import TenantRegistryMixin, TenantStatus
from db_shared.errors import ConfigurationError, DuplicateEntryError, NotFoundError
from db_shared.tenancy import validate_tenant_slug

log = logging.getLogger(__name__)
ALL_TENANTS_LOCK = "tenants"
# A helper process costs seconds to start (imports): worth it only for enough tenants.
TENANTS_PER_HELPER = 100
HELPER_BATCH = 20


class TenantExistsError(DuplicateEntryError):
    """``tenants create`` for a slug (or schema) that is already there."""


@dataclass(frozen=True)
class TenantRow:
    slug: str
    schema: str
    status: str
    revision: str | None
    last_error: str | None
    # Its server (None: the default one).
    server: str | None = None


TenantResult = TenantReport  # a schema tenant's report


class SchemaTenantMigrator:
    """Tenant operations of one schema-per-tenant database."""

    def __init__(self, db: DatabaseConfig, url: URL | None = None) -> None:
        if db.tenancy is None:
            raise ConfigurationError(f"The {db.name} database is not schema-per-tenant.")
        self.db = db
        self.tenancy: SchemaTenancy = db.tenancy
        self.migrator = Migrator(db, url)
        self._applied: list[Any] = []

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

    def create(self, slug: str, name: str | None = None, region: str | None = None) -> TenantResult:
        """Register the tenant, create its schema and migrate it, all in one transaction."""
        schema = self.tenancy.schema_for(slug)
        started = time.perf_counter()
        with self.connect() as conn:
            try:
                with conn.begin():
                    conn.execute(
                        insert(self.model).values(
                            {
                                self.model.slug: slug,
                                self.model.name: name or slug,
                                self.model.schema_name: schema,
                                self.model.region: region,
                            }
                        )
                    )
                    conn.execute(text(f"CREATE SCHEMA {quote_identifier(schema)}"))
                    after = self._upgrade_in_transaction(conn, schema)
                    self._record(conn, slug, after, None)
            except DBAPIError as exc:
                state = sqlstate(exc)
                if state == "23505":  # unique_violation: slug or schema already registered
                    raise TenantExistsError(
                        table=self.table.name,
                        columns=("slug",),
                        message=f"tenant {slug} already exists (schema {schema}); pick another "
                        f"slug, or drop it first with `db {self.db.name} tenants drop {slug}`.",
                    ) from None
                if state == "42P06":  # duplicate_schema: a schema nobody registered
                    raise TenantExistsError(
                        table=self.table.name,
                        columns=("schema_name",),
                        message=f"schema {schema} already exists but no tenant {slug} is "
                        "registered for it (left by a registry reset or made by hand); "
                        f'drop it (DROP SCHEMA "{schema}" CASCADE) or pick another slug.',
                    ) from None
                raise
        return TenantResult(
            slug, schema, None, after, Outcome.MIGRATED, None, time.perf_counter() - started
        )

    def reset(self) -> ResetReport:
        """Development: the database's reset (default schema and every registered tenant
        schema dropped, the registry kept), then every tenant migrated again from empty."""
        report = self.migrator.reset()
        rebuilt: list[str] = []
        failed: list[str] = []
        for result in self.migrate_all(verify=True):
            (failed if result.failed else rebuilt).append(result.slug)
        return replace(report, tenants_rebuilt=tuple(rebuilt), tenants_failed=tuple(failed))

    def drop(self, slug: str) -> None:
        """Drop the tenant's schema and its registry row (irreversible)."""
        validate_tenant_slug(slug)  # before any connection
        with self.connect() as conn, conn.begin():
            schema = self.get(conn, slug).schema
            conn.execute(text(f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE"))
            conn.execute(delete(self.model).where(self.model.slug == slug))

    # migrating -----------------------------------------------------------------------

    def _upgrade_in_transaction(self, conn: Connection, schema: str) -> str | None:
        advisory_lock(conn, lock_key(self.db.version_table, schema), xact=True)
        conn.execute(text(f"SET LOCAL search_path TO {quote_identifier(schema)}"))
        cfg = self.migrator.alembic_config(conn)
        cfg.attributes["tenant_schema"] = schema
        cfg.attributes["applied"] = self._applied = []
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
        t = self.model
        values: dict[Any, Any] = {t.last_error: error}
        if error is None:
            # A provisioned tenant becomes active; a suspended one stays suspended.
            status = case(
                (t.status == TenantStatus.PROVISIONING, TenantStatus.ACTIVE.value), else_=t.status
            )
            values.update({t.revision: revision, t.migrated_at: func.now(), t.status: status})
        conn.execute(update(t).where(t.slug == slug).values(values))

    def _failing_revision(self, before: str | None) -> str:
        """The revision a failed tenant upgrade stopped at: the one after the last applied."""
        path = [
            sc.revision
            for sc in reversed(list(self.script.iterate_revisions("head", before or "base")))
            if sc is not None and sc.revision != before
        ]
        done = len(getattr(self, "_applied", []))
        if done < len(path):
            sc = self.script.get_revision(path[done])
            return f"revision {path[done]} ({(sc.doc if sc else '') or ''!r})"
        return "a revision"

    def migrate_one(self, conn: Connection, tenant: TenantRow, before: str | None) -> TenantResult:
        """Migrate one tenant in one transaction; a lock timeout is retried with backoff."""
        started = time.perf_counter()

        def attempt() -> str | None:
            with conn.begin():
                after = self._upgrade_in_transaction(conn, tenant.schema)
                self._record(conn, tenant.slug, after, None)
            return after

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
            try:
                with conn.begin():
                    self._record(conn, tenant.slug, None, reason)
            except DBAPIError as record_exc:  # e.g. the registry row is locked too
                log.warning("could not record %s's failure: %s", tenant.slug, record_exc)
            return TenantResult(
                tenant.slug, tenant.schema, before, before, Outcome.FAILED, reason,
                time.perf_counter() - started, os.getpid(),
            )  # fmt: skip
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

    def plan(
        self, conn: Connection, *, verify: bool = True, only: Sequence[str] | None = None
    ) -> tuple[list[TenantResult], list[tuple[TenantRow, str | None]]]:
        """(tenants already at head, tenants to migrate with their current revision).

        ``verify=True`` reads every tenant's version table (the truth; a new backend opens a
        thousand relations in ~0.1 s). ``verify=False`` trusts the registry for tenants it
        records at head with no error (the runner writes that row in the same transaction
        as the upgrade) once one catalog query has confirmed each such schema still has its
        version table; every other tenant's version table is read.

        ``only``: just these slugs (``UnknownTenantsError`` naming any the registry lacks).
        """
        head = self.head()
        tenants = self.tenants(conn)
        if only is not None:
            wanted = set(
                select_tenants(
                    [t.slug for t in tenants], only, f"the {self.db.name} tenant registry"
                )
            )
            tenants = [t for t in tenants if t.slug in wanted]
        trusted: set[str] = set()
        if not verify:
            claimed = [
                t.schema
                for t in tenants
                if t.revision == head and t.last_error is None and t.status == TenantStatus.ACTIVE
            ]
            trusted = set(self.with_version_table(conn, claimed))
        versions = self.versions(conn, [t.schema for t in tenants if t.schema not in trusted])
        versions.update(dict.fromkeys(trusted, head))
        done = [
            TenantResult(t.slug, t.schema, head, head, Outcome.UP_TO_DATE)
            for t in tenants
            if versions[t.schema] == head
        ]
        todo = [(t, versions[t.schema]) for t in tenants if versions[t.schema] != head]
        return done, todo

    def migrate_all(
        self,
        *,
        workers: int = 2,
        on_start: Callable[[int], None] | None = None,
        on_result: Callable[[TenantResult], None] | None = None,
        min_per_helper: int = TENANTS_PER_HELPER,
        verify: bool = False,
        only: Sequence[str] | None = None,
    ) -> list[TenantResult]:
        """Bring every tenant to head; a failing tenant is reported and left as it was.

        ``workers`` counts this process: it migrates tenants from the first moment, and
        ``workers - 1`` helper processes join once they have started (a spawned interpreter
        spends seconds importing SQLAlchemy and Alembic, during which this process would
        otherwise wait). Helpers take small batches from the same queue, so whoever is
        free takes the next tenants, and helpers are only started when there are at least
        ``min_per_helper`` tenants for each. Which tenants are at head: see ``plan``
        (``verify=True`` reads every version table instead of trusting the registry).
        ``only``: just these tenants; an unknown slug raises before any is migrated.
        """
        results: list[TenantResult] = []

        def report(result: TenantResult) -> None:
            results.append(result)
            if on_result:
                on_result(result)

        with self.connect() as conn, migration_lock(conn, lock_key(ALL_TENANTS_LOCK, "*")):
            done, todo = self.plan(conn, verify=verify, only=only)
            conn.rollback()
            results.extend(done)
            if on_start:
                on_start(len(todo))
            queue = deque(todo)
            helpers = min(workers - 1, len(todo) // max(1, min_per_helper))
            if helpers <= 0:
                while queue:
                    report(self.migrate_one(conn, *queue.popleft()))
                return results
            url = self.migrator.url.render_as_string(hide_password=False)
            with ProcessPoolExecutor(
                max_workers=helpers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(self.db, url),
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
                        report(self.migrate_one(conn, *queue.popleft()))
                    elif pending:
                        wait(pending, return_when=FIRST_COMPLETED)
        return results


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


def _worker_init(db: DatabaseConfig, url: str) -> None:
    migrator = SchemaTenantMigrator(db, make_url(url))
    engine = migrator.migrator.engine()
    _worker["migrator"] = migrator
    conn = engine.connect()
    set_migration_timeouts(conn, migrator.migrator.settings)
    _worker["conn"] = conn


def _worker_migrate(batch: list[tuple[TenantRow, str | None]]) -> list[TenantResult]:
    migrator: SchemaTenantMigrator = _worker["migrator"]
    conn: Connection = _worker["conn"]
    return [migrator.migrate_one(conn, tenant, before) for tenant, before in batch]
