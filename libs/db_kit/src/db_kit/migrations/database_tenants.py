"""Database-per-tenant provisioning and migrations: create, migrate, inspect and drop the
tenant databases (the ``db NAME tenants`` commands of a database-per-tenant library)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, case, delete, func, insert, inspect, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL

from db_kit.config import DatabaseConfig
from db_kit.errors import first_line, sqlstate
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.outcome import Outcome, TenantReport, select_tenants
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

    def _registered(self) -> dict[str, tuple[URL, str]]:
        """Registered slug -> (database URL, status); empty before the registry is migrated."""
        assert self.db.database_tenancy is not None
        model = self.db.database_tenancy.model
        table = model.__table__  # type: ignore[attr-defined]
        control = self.control_url
        with self._registry_connect() as conn:
            if not inspect(conn).has_table(table.name, schema=table.schema):
                return {}
            rows = conn.execute(select(model.slug, model.database_name, model.status)).all()
        return {slug: (control.set(database=name), status) for slug, name, status in rows}

    def _registry_ready(self, conn: Connection) -> bool:
        assert self.db.database_tenancy is not None
        table = self.db.database_tenancy.model.__table__  # type: ignore[attr-defined]
        ready = bool(inspect(conn).has_table(table.name, schema=table.schema))
        conn.rollback()  # end the catalog query's implicit transaction
        return ready

    def _register(self, slug: str, name: str | None, region: str | None) -> URL:
        """The registered tenant's URL; registers it (provisioning) when it is new."""
        assert self.db.database_tenancy is not None
        tenancy = self.db.database_tenancy
        model = tenancy.model
        with self._registry_connect() as conn:
            if not self._registry_ready(conn):
                raise ConfigurationError(
                    f"The {self.db.name} tenant registry is not migrated yet: run "
                    f"`db {self.db.name} registry migrate` (or `db {self.db.name} migrate`), "
                    f"or list the tenant in {self.resolver_source.split(' or ')[0]}."
                )
            with conn.begin():
                found = conn.execute(select(model.database_name).where(model.slug == slug)).scalar()
                if found is None:
                    found = tenancy.database_for(slug)
                    try:
                        conn.execute(
                            insert(model).values(
                                {
                                    model.slug: slug,
                                    model.name: name or slug,
                                    model.database_name: found,
                                    model.region: region,
                                }
                            )
                        )
                    except sa_exc.IntegrityError as exc:
                        if sqlstate(exc) == "23505":
                            raise DuplicateEntryError(
                                table="tenants",
                                columns=("database_name",),
                                message=f"database {found} is already registered for another "
                                "tenant (one renamed from this slug); pick another slug.",
                            ) from None
                        raise
        url = self.control_url.set(database=found)
        self.registered[slug] = (url, TenantStatus.PROVISIONING.value)
        return url

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
    ) -> TenantDatabaseResult:
        """Create the tenant's database when missing, then migrate it to head.

        A tenant neither given a ``url`` nor in the static map is registered in the control
        registry (when the library has one): its database is made on the control server,
        and it turns active once migrated.
        """
        slug = validate_tenant_slug(slug)
        if url is None and slug not in self.static and self.db.database_tenancy is not None:
            target = self._register(slug, name, region)
        else:
            target = self.url_for(slug, url)
        name_ = self._guard(target)
        started = time.perf_counter()
        created = False
        if not self.exists(target):
            with self._server(target) as conn:
                quoted = quote_identifier(name_)
                try:
                    conn.execute(text(f"CREATE DATABASE {quoted}"))
                    created = True
                except sa_exc.ProgrammingError as exc:
                    if sqlstate(exc) != "42P04":  # created meanwhile by a concurrent run
                        raise
        try:
            before, after = Migrator(self.db, target).upgrade("head")
        except Exception as exc:
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
            seconds=time.perf_counter() - started,
        )  # fmt: skip

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
        url = self.resolver.resolve_sync(slug)
        migrator = Migrator(self.db, url)
        try:
            if not self.exists(url):
                return TenantReport(slug, _shown(url), None, None, Outcome.MISSING)
            with migrator.connect() as conn:
                current = migrator.current(conn)
                conn.rollback()
        except Exception as exc:
            return TenantReport(
                slug, _shown(url), None, None, Outcome.UNREACHABLE, first_line(exc)[:500]
            )
        revision = ",".join(current) or None
        state = Outcome.UP_TO_DATE if revision is not None and revision == head else Outcome.PENDING
        return TenantReport(slug, _shown(url), revision, revision, state)

    def states(self) -> list[TenantDatabaseState]:
        head = self.head()
        return [self.state(slug, head) for slug in self.resolver.tenants]

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
        """Upgrade every configured tenant database (``only``: just these) to head, one
        after the other.

        A failing tenant is reported (its revision's transaction rolled back) and the
        others still run. An unknown slug in ``only`` raises before any is migrated.
        """
        results: list[TenantDatabaseResult] = []
        urls = self.resolver.urls()
        if only is not None:
            wanted = select_tenants(urls, only, self.resolver_source)
            urls = {slug: urls[slug] for slug in sorted(wanted)}
        for slug, url in urls.items():
            started = time.perf_counter()
            try:
                before, after = Migrator(self.db, url).upgrade("head")
            except Exception as exc:
                result = TenantDatabaseResult(
                    slug, _shown(url), None, None, Outcome.FAILED, first_line(exc)[:500],
                    time.perf_counter() - started,
                )  # fmt: skip
                self._record(slug, None, result.error)
            else:
                self._record(slug, ",".join(after) or None, None)
                result = TenantDatabaseResult(
                    slug, _shown(url), ",".join(before) or None, ",".join(after) or None,
                    Outcome.MIGRATED if before != after else Outcome.UP_TO_DATE,
                    seconds=time.perf_counter() - started,
                )  # fmt: skip
            results.append(result)
            if on_result is not None:
                on_result(result)
        return results
