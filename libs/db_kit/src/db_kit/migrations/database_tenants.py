"""Database-per-tenant provisioning and migrations: create, migrate, inspect and drop the
tenant databases (the ``db NAME tenants`` commands of a database-per-tenant library).

A fleet (``<PREFIX>SERVERS``): a registered tenant's database lives on its server (the
registry row's ``server``; NULL: the home server, which holds the registry in the control
database), reached with that server's primary URL and the tenant's database name.
``migrate_all`` handles the servers concurrently (a thread each, holding
``ALL_TENANTS_LOCK`` in its server's primary database); a server that cannot be reached
fails its tenants only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from sqlalchemy import Connection, case, delete, func, insert, inspect, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL

from db_kit.config import DatabaseConfig
from db_kit.errors import first_line, sqlstate
from db_kit.migrations.env import lock_key, migration_lock
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.outcome import (
    ALEMBIC_LOCK,
    Outcome,
    Placement,
    TenantReport,
    select_tenants,
)
from db_kit.sql import quote_identifier
from db_kit.tenancy.registry import TenantStatus
from db_kit.tenancy.url_resolvers import (
    RESERVED_DATABASES,
    StaticTenantUrlResolver,
    TenantDatabaseSettings,
    tenant_url,
)
from db_shared.errors import ConfigurationError, DuplicateEntryError, NotFoundError
from db_shared.tenancy import (
    validate_tenant_slug,
)

T = TypeVar("T")
log = logging.getLogger(__name__)
# The same key as schema-per-tenant runs (``schema_tenants.ALL_TENANTS_LOCK``), held per server.
ALL_TENANTS_LOCK = "tenants"


# provisioning: the `db NAME tenants` commands -------------------------------------------


TenantDatabaseResult = TenantReport  # a tenant database's report
TenantDatabaseState = TenantReport  # a tenant database's line in `tenants list`


def _shown(url: URL) -> str:
    """Where a tenant's database lives, for tables: host:port/database (no credentials)."""
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database}"


@dataclass
class TenantDatabaseMigrator:
    """Creates, migrates, inspects and drops the databases of a database-per-tenant lib.

    Tenants come from the settings' map (``urls`` overrides it). Every slug is validated
    before any SQL; database names are quoted; the ``postgres`` and template databases,
    and the library's own main database, are refused.
    """

    db: DatabaseConfig
    urls: Mapping[str, URL | str] | None = None
    # The control database (registry); None: the library's main database URL.
    control: URL | None = None
    resolver: StaticTenantUrlResolver = field(init=False)
    resolver_source: str = field(init=False, default="tenant map")
    # Tenants of the control registry: slug -> (database URL, status).
    registered: dict[str, tuple[URL, str]] = field(init=False, default_factory=dict)
    # Slugs of the static map (settings or ``urls``).
    static: frozenset[str] = field(init=False, default=frozenset())
    # Registered slug -> the name of its server.
    servers: dict[str, str] = field(init=False, default_factory=dict)
    # Registered slugs whose server is not configured -> why (they are not touched).
    unplaced: dict[str, str] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        settings = self.db.settings()
        if isinstance(settings, TenantDatabaseSettings):
            source = settings.tenant_urls_variable
            urls: Mapping[str, URL | str] = (
                settings.tenant_url_map() if self.urls is None else self.urls
            )
        elif self.urls is not None:
            source, urls = "tenant map", self.urls
        else:
            raise ConfigurationError(
                f"The {self.db.name} database is not database-per-tenant: its settings do not "
                "derive from TenantDatabaseSettings."
            )
        if self.urls is None and self.db.database_tenancy is not None:
            self.registered = self._registered()
            source = f"{source} or the {self.db.name} tenant registry"
        # The static map wins over the registry for a slug in both.
        merged = {**{slug: url for slug, (url, _) in self.registered.items()}, **urls}
        self.static = frozenset(urls)
        self.resolver = StaticTenantUrlResolver(merged, source=source)
        self.resolver_source = source

    # the registry (database-per-tenant libraries with a control database) ---------------

    @property
    def control_url(self) -> URL:
        """The control database (the library's main database): the registry lives there, and
        registered tenant databases live on its server with its credentials."""
        return self.control if self.control is not None else Migrator(self.db).url

    def _registry_connect(self) -> AbstractContextManager[Connection]:
        assert self.db.database_tenancy is not None
        return Migrator(self.db.database_tenancy.registry, self.control_url).connect()

    @cached_property
    def placement(self) -> Placement:
        """The servers of the fleet; the home one is the control database's."""
        return Placement.of(self.db.settings(), self.control_url)

    def _registered(self) -> dict[str, tuple[URL, str]]:
        """Registered slug -> (database URL on its server, status); empty before the
        registry is migrated. Fills ``servers`` (and ``unplaced``)."""
        assert self.db.database_tenancy is not None
        model = self.db.database_tenancy.model
        table = model.__table__  # type: ignore[attr-defined]
        placement = self.placement
        with self._registry_connect() as conn:
            if not inspect(conn).has_table(table.name, schema=table.schema):
                return {}
            rows = conn.execute(
                select(model.slug, model.database_name, model.status, model.server)
            ).all()
        found: dict[str, tuple[URL, str]] = {}
        for slug, name, status, stored in rows:
            server = placement.name(stored)
            self.servers[slug] = server
            primary = placement.primaries.get(server)
            if primary is None:
                self.unplaced[slug] = placement.unknown(server)
                primary = self.control_url.set(host="unplaced.invalid")  # never connected to
            found[slug] = (primary.set(database=name), status)
        return found

    def server_of(self, slug: str, url: URL | None = None) -> str:
        """The server of a tenant: its registry row's, or the fleet server running
        ``url`` (its host:port when none does)."""
        if slug in self.servers and slug not in self.static:
            return self.servers[slug]
        url = url if url is not None else self.resolver.resolve_sync(slug)
        found = self.db.settings().server_of(url) if self.placement.configured else None
        if found is not None:
            return found.name
        if url.host == self.control_url.host and url.port == self.control_url.port:
            return self.placement.home
        return f"{url.host or 'localhost'}:{url.port or 5432}"

    def _placed(self, slug: str) -> None:
        """``ConfigurationError`` for a registered tenant whose server is not configured."""
        if slug in self.unplaced and slug not in self.static:
            raise ConfigurationError(f"tenant {slug}: {self.unplaced[slug]}")

    def _registry_ready(self, conn: Connection) -> bool:
        assert self.db.database_tenancy is not None
        table = self.db.database_tenancy.model.__table__  # type: ignore[attr-defined]
        ready = bool(inspect(conn).has_table(table.name, schema=table.schema))
        conn.rollback()  # end the catalog query's implicit transaction
        return ready

    def _register(
        self, slug: str, name: str | None, region: str | None, server: str | None = None
    ) -> tuple[URL, bool]:
        """The registered tenant's URL, and whether this call registered it (provisioning,
        on ``server`` or the placement policy's choice) because it was new."""
        assert self.db.database_tenancy is not None
        tenancy = self.db.database_tenancy
        model = tenancy.model
        placement = self.placement
        inserted = False
        with self._registry_connect() as conn:
            if not self._registry_ready(conn):
                raise ConfigurationError(
                    f"The {self.db.name} tenant registry is not migrated yet: run "
                    f"`db {self.db.name} registry migrate` (or `db {self.db.name} migrate`), "
                    f"or list the tenant in {self.resolver_source.split(' or ')[0]}."
                )
            with conn.begin():
                row = conn.execute(
                    select(model.database_name, model.server).where(model.slug == slug)
                ).first()
                if row is not None:
                    found, target = row[0], placement.name(row[1])
                    if server is not None and server != target:
                        raise ConfigurationError(
                            f"tenant {slug} is already registered on server {target}, not {server}."
                        )
                    placement.url(target)
                else:
                    target = placement.choose(server, lambda: placement.count_tenants(conn, model))
                    found = tenancy.database_for(slug)
                    try:
                        conn.execute(
                            insert(model).values(
                                {
                                    model.slug: slug,
                                    model.name: name or slug,
                                    model.database_name: found,
                                    model.region: region,
                                    model.server: placement.stored(target),
                                }
                            )
                        )
                        inserted = True
                    except sa_exc.IntegrityError as exc:
                        if sqlstate(exc) == "23505":
                            raise DuplicateEntryError(
                                table="tenants",
                                columns=("database_name",),
                                message=f"database {found} is already registered for another "
                                "tenant (one renamed from this slug); pick another slug.",
                            ) from None
                        raise
        url = placement.url(target).set(database=found)
        if inserted:
            self.registered[slug] = (url, TenantStatus.PROVISIONING.value)
        self.servers[slug] = target
        return url, inserted

    def _record(self, slug: str, revision: str | None, error: str | None) -> None:
        """Write a registered tenant's migration outcome (provisioning -> active on success)."""
        if slug not in self.registered or self.db.database_tenancy is None:
            return
        model = self.db.database_tenancy.model
        values: dict[Any, Any] = {model.last_error: error}
        if error is None:
            values[model.revision] = revision
            values[model.migrated_at] = func.now()
            values[model.status] = case(
                (model.status == TenantStatus.PROVISIONING, TenantStatus.ACTIVE.value),
                else_=model.status,
            )
        with self._registry_connect() as conn, conn.begin():
            conn.execute(update(model).where(model.slug == slug).values(values))

    def _unregister(self, slug: str) -> None:
        if self.db.database_tenancy is None:
            return
        model = self.db.database_tenancy.model
        with self._registry_connect() as conn, conn.begin():
            conn.execute(delete(model).where(model.slug == slug))
        self.registered.pop(slug, None)

    def url_for(self, slug: str, url: URL | str | None = None) -> URL:
        """The tenant's URL: ``url`` when given, else the configured one."""
        slug = validate_tenant_slug(slug)
        if url is not None:
            return tenant_url(url, tenant=slug, source="--url")
        self._placed(slug)
        if slug not in self.static and slug in self.registered:
            return self.registered[slug][0]
        return self.resolver.resolve_sync(slug)

    def _guard(self, url: URL) -> str:
        name = url.database or ""
        if name in RESERVED_DATABASES:
            raise ConfigurationError(f"Refusing to use the {name!r} database as a tenant's.")
        main = self.db.settings().validated_url()
        if main is not None and (main.host, main.port or 5432, main.database) == (
            url.host,
            url.port or 5432,
            name,
        ):
            raise ConfigurationError(
                f"Database {name!r} is the {self.db.name} main database, not a tenant's."
            )
        return name

    @contextmanager
    def _server(self, url: URL) -> Iterator[Connection]:
        """An autocommit connection to the maintenance database of ``url``'s server."""
        with Migrator(self.db, url.set(database="postgres")).connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")

    def head(self) -> str | None:
        heads = Migrator(self.db).heads()
        return heads[0] if len(heads) == 1 else None

    def create(
        self,
        slug: str,
        url: URL | str | None = None,
        *,
        name: str | None = None,
        region: str | None = None,
        server: str | None = None,
    ) -> TenantDatabaseResult:
        """Create the tenant's database when missing, then migrate it to head.

        A tenant neither given a ``url`` nor in the static map is registered in the control
        registry (when the library has one) on ``server`` (a name of ``<PREFIX>SERVERS``;
        None: the placement policy's choice): its database is made on that server, and it
        turns active once migrated. When that fails, the database this call made is dropped
        and the registration it made removed (nothing is left half made; run it again).
        """
        slug = validate_tenant_slug(slug)
        registered = False
        if url is None and slug not in self.static and self.db.database_tenancy is not None:
            target, registered = self._register(slug, name, region, server)
        else:
            if server is not None:
                raise ConfigurationError(
                    f"--server places registered tenants; tenant {slug}'s database is where "
                    f"its URL ({'--url' if url is not None else self.resolver_source}) says."
                )
            target = self.url_for(slug, url)
        started = time.perf_counter()
        created = False
        try:
            name_ = self._guard(target)
            if not self.exists(target):
                with self._server(target) as conn:
                    quoted = quote_identifier(name_)
                    try:
                        conn.execute(text(f"CREATE DATABASE {quoted}"))
                        created = True
                    except sa_exc.ProgrammingError as exc:
                        if sqlstate(exc) != "42P04":  # created meanwhile by a concurrent run
                            raise
            with ALEMBIC_LOCK:
                before, after = Migrator(self.db, target).upgrade("head")
        except Exception as exc:
            if registered:
                self._undo(slug, target if created else None)
            else:
                self._record(slug, None, first_line(exc)[:1000])
            raise
        self._record(slug, ",".join(after) or None, None)
        status = (
            Outcome.CREATED
            if created
            else (Outcome.MIGRATED if before != after else Outcome.UP_TO_DATE)
        )
        return TenantDatabaseResult(
            slug, _shown(target), ",".join(before) or None, ",".join(after) or None, status,
            seconds=time.perf_counter() - started, server=self.servers.get(slug, ""),
        )  # fmt: skip

    def _undo(self, slug: str, created: URL | None) -> None:
        """A failed ``create``: drop the database it made and the row it registered."""
        try:
            if created is not None:
                with self._server(created) as conn:
                    quoted = quote_identifier(created.database or "")
                    conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        except Exception as exc:  # the row is kept then: `tenants drop` finishes the job
            log.warning("could not drop tenant %s's new database: %s", slug, exc)
            try:
                self._record(slug, None, f"create failed; drop it and retry: {first_line(exc)}")
            except Exception as record_exc:
                log.warning("could not record %s's failure: %s", slug, record_exc)
            return
        try:
            self._unregister(slug)
        except Exception as exc:
            log.warning("could not unregister tenant %s: %s", slug, exc)

    def drop(self, slug: str, url: URL | str | None = None, *, force: bool = False) -> bool:
        """Drop the tenant's database (and its registry row); False when the database did
        not exist. ``force`` ends the sessions still connected to it."""
        target = self.url_for(slug, url)
        name = self._guard(target)
        existed = self.exists(target)
        if existed:
            with self._server(target) as conn:
                quoted = quote_identifier(name)
                conn.execute(text(f"DROP DATABASE {quoted}" + (" WITH (FORCE)" if force else "")))
        if url is None and slug in self.registered and slug not in self.static:
            self._unregister(slug)
        return existed

    def exists(self, url: URL) -> bool:
        """Whether ``url``'s database exists on its server (asked of ``postgres``)."""
        with self._server(url) as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            ).first()
        return found is not None

    def state(self, slug: str, head: str | None) -> TenantDatabaseState:
        if slug in self.unplaced and slug not in self.static:
            return TenantReport(
                slug, "-", None, None, Outcome.UNREACHABLE, self.unplaced[slug],
                server=self.servers[slug],
            )  # fmt: skip
        url = self.resolver.resolve_sync(slug)
        server = self.server_of(slug, url)
        migrator = Migrator(self.db, url)
        try:
            if not self.exists(url):
                return TenantReport(slug, _shown(url), None, None, Outcome.MISSING, server=server)
            with migrator.connect() as conn:
                current = migrator.current(conn)
                conn.rollback()
        except Exception as exc:
            return TenantReport(
                slug, _shown(url), None, None, Outcome.UNREACHABLE,
                f"server {server}: {first_line(exc)}"[:500], server=server,
            )  # fmt: skip
        revision = ",".join(current) or None
        state = Outcome.UP_TO_DATE if revision is not None and revision == head else Outcome.PENDING
        return TenantReport(slug, _shown(url), revision, revision, state, server=server)

    def states(self) -> list[TenantDatabaseState]:
        """Every tenant's state, by server (the home one first), then by slug."""
        head = self.head()
        home = self.placement.home
        found = [self.state(slug, head) for slug in self.resolver.tenants]
        return sorted(found, key=lambda r: (r.server != home, r.server, r.slug))

    def existing_url(self, slug: str) -> URL:
        """The tenant's database URL, checked to exist (``NotFoundError`` naming the fix)."""
        target = self.url_for(slug)
        self._guard(target)
        if not self.exists(target):
            error = NotFoundError("tenant database", _shown(target))
            error.args = (
                f"tenant {slug}'s database {_shown(target)} does not exist; create it with "
                f"`db {self.db.name} tenants create {slug}`",
            )
            raise error
        return target

    def migrate_all(
        self,
        on_result: Callable[[TenantDatabaseResult], None] | None = None,
        only: Sequence[str] | None = None,
    ) -> list[TenantDatabaseResult]:
        """Upgrade every configured tenant database (``only``: just these) to head.

        Tenants are grouped by server; the servers are handled concurrently (a thread
        each, holding ``ALL_TENANTS_LOCK`` in the server's primary database when it is a
        server of the fleet), a server's tenants one after the other. A failing tenant is
        reported (its revision's transaction rolled back) and the others still run; a
        server that cannot be reached fails its tenants only (reason: ``server NAME
        unreachable: ...``). An unknown slug in ``only`` raises before any is migrated.
        """
        urls = self.resolver.urls()
        if only is not None:
            wanted = select_tenants(urls, only, self.resolver_source)
            urls = {slug: urls[slug] for slug in sorted(wanted)}
        groups: dict[str, dict[str, URL]] = {}
        for slug, url in urls.items():
            groups.setdefault(self.server_of(slug, url), {})[slug] = url
        results: list[TenantDatabaseResult] = []
        guard = threading.Lock()

        def report(result: TenantDatabaseResult) -> None:
            with guard:
                results.append(result)
                if on_result is not None:
                    on_result(result)

        if len(groups) <= 1:
            for server, tenants in groups.items():
                self._migrate_server(server, tenants, report)
        else:
            with ThreadPoolExecutor(len(groups), thread_name_prefix="tenant-dbs") as threads:
                futures = [
                    threads.submit(self._migrate_server, server, tenants, report)
                    for server, tenants in groups.items()
                ]
                for future in futures:
                    future.result()
        order = {slug: i for i, slug in enumerate(urls)}
        return sorted(results, key=lambda r: order.get(r.slug, len(order)))

    def _migrate_server(
        self,
        server: str,
        tenants: dict[str, URL],
        report: Callable[[TenantDatabaseResult], None],
    ) -> None:
        """``migrate_all`` for the tenants of one server."""
        done: set[str] = set()
        try:
            with ExitStack() as stack:
                primary = self.placement.primaries.get(server)
                if primary is not None:
                    conn = stack.enter_context(Migrator(self.db, primary).connect())
                    stack.enter_context(migration_lock(conn, lock_key(ALL_TENANTS_LOCK, "*")))
                for slug, url in tenants.items():
                    result = self._migrate_one(slug, url, server)
                    done.add(slug)
                    report(result)
        except Exception as exc:
            reason = self.placement.unreachable(server, exc)
            log.warning("%s", reason)
            for slug, url in tenants.items():
                if slug in done:
                    continue
                result = TenantDatabaseResult(
                    slug, _shown(url), None, None, Outcome.FAILED, reason, server=server
                )
                try:
                    self._record(slug, None, reason)
                except Exception as record_exc:  # the home server is down too
                    log.warning("could not record %s's failure: %s", slug, record_exc)
                report(result)

    def _migrate_one(self, slug: str, url: URL, server: str) -> TenantDatabaseResult:
        started = time.perf_counter()
        if slug in self.unplaced and slug not in self.static:
            reason = self.unplaced[slug]
            self._record(slug, None, reason)
            return TenantDatabaseResult(
                slug, "-", None, None, Outcome.FAILED, reason, server=server
            )
        try:
            with ALEMBIC_LOCK:
                before, after = Migrator(self.db, url).upgrade("head")
        except Exception as exc:
            result = TenantDatabaseResult(
                slug, _shown(url), None, None, Outcome.FAILED, first_line(exc)[:500],
                time.perf_counter() - started, server=server,
            )  # fmt: skip
            self._record(slug, None, result.error)
            return result
        self._record(slug, ",".join(after) or None, None)
        return TenantDatabaseResult(
            slug, _shown(url), ",".join(before) or None, ",".join(after) or None,
            Outcome.MIGRATED if before != after else Outcome.UP_TO_DATE,
            seconds=time.perf_counter() - started, server=server,
        )  # fmt: skip
