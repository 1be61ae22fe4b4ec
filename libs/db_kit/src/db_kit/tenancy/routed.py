"""``TenantRoutedDatabase``: the ``db_shared.Database`` of "the current tenant" for a
database-per-tenant library; each unit of work reads ``current_tenant()`` and runs on
that tenant's database, through the engine cache. Tenants come from a static map, a
custom resolver, and the library's control registry (``DatabaseTenancy``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import TypeVar

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from db_kit.config import DatabaseConfig
from db_kit.database import SQLAlchemyDatabase, track
from db_kit.engine import Engines
from db_kit.errors import TENANT_GONE_SQLSTATES, ConstraintColumns, sqlstate
from db_kit.replicas import ReplicaSet
from db_kit.settings import DatabaseSettings, ServerSettings
from db_kit.tenancy.engine_cache import EngineCache, TenantDatabaseUnavailableError
from db_kit.tenancy.lookup import RegistryLookup, TenantEntry
from db_kit.tenancy.registry import TenantStatus
from db_kit.tenancy.url_resolvers import (
    ChainedTenantUrlResolver,
    RegistryTenantUrlResolver,
    StaticTenantUrlResolver,
    TenantDatabaseSettings,
    TenantUrlResolver,
)
from db_shared.errors import ConfigurationError, DatabaseError, DatabaseUnavailableError
from db_shared.tenancy import (
    InvalidTenantError,
    Tenant,
    TenantLike,
    TenantMovedError,
    UnknownTenantError,
    current_tenant,
    tenant_context,
)

T = TypeVar("T")

log = logging.getLogger(__name__)

# At connect time (no SQLSTATE): the server's words for a database that is not there, or
# that the role may not use (a move renames it away or revokes CONNECT).
_GONE_WORDS = ("does not exist", "permission denied")

# The control database's pool, for registry lookups only.
CONTROL_POOL_SIZE = 2
CONTROL_MAX_OVERFLOW = 2


# the Database of the current tenant -----------------------------------------------------


class _TenantUnitOfWork(SQLAlchemyDatabase):
    """``SQLAlchemyDatabase``'s units of work and error translation on one tenant's engines.

    Short-lived (one per lease) and never disposed itself: the ``EngineCache`` owns the
    engines (so neither ``dispose_all`` nor the fork hook may touch it).
    """

    _tracked = False
    # Not from the settings: the engine cache gives the tenant database's replica set.
    _uses_replicas = False

    def __init__(
        self,
        config: DatabaseConfig,
        settings: DatabaseSettings,
        engines: Engines,
        columns: ConstraintColumns,
        tenant: str,
        replicas: ReplicaSet | None = None,
    ) -> None:
        super().__init__(config, settings=settings, url=engines.url, multi_tenant=False)
        self._engines = engines
        self._columns = columns
        self.tenant = tenant
        # With replicas: reads may go to them, writes record the WAL position.
        self._replicas = replicas
        self._server = replicas.server if replicas is not None else None

    def translate(self, exc: BaseException) -> DatabaseError | None:
        if isinstance(exc, DatabaseError):
            return exc  # raised on purpose, maybe by another database: keep it as it is
        # A missing database or refused login at connect time carries no SQLSTATE in
        # psycopg: the base translation already reports it as unavailable, reason included.
        mapped = super().translate(exc)
        if isinstance(mapped, DatabaseUnavailableError) and not isinstance(
            mapped, TenantDatabaseUnavailableError
        ):
            return TenantDatabaseUnavailableError(
                self.tenant, str(mapped), host=mapped.host, port=mapped.port
            )
        return mapped


class TenantRoutedDatabase:
    """Implements ``db_shared.Database`` for database-per-tenant.

    Each unit of work reads ``current_tenant()``, takes that tenant's engines from the
    ``EngineCache`` and runs exactly like ``SQLAlchemyDatabase``'s (commit on success,
    rollback on error, driver errors translated). A tenant whose database is down raises
    ``TenantDatabaseUnavailableError`` (a ``DatabaseUnavailableError``) for that tenant
    alone. The cache is built on first use, from the settings unless given.

    A slug is resolved by ``resolver`` when one is given, else by the settings' static map
    (``BIBIKOS_TENANT_URLS``); then, when ``registry`` (default: the config has
    ``database_tenancy``, no resolver was given and the settings say ``multi_tenant``,
    e.g. ``BIBIKOS_DB_MULTI_TENANT=true``), by the control registry: an ACTIVE tenant's
    database on the control server, a SUSPENDED one ``TenantSuspendedError``.
    The registry is read through a small pool on the settings' main URL; when it announces
    a change, engines of tenants that are no longer active are dropped (each once its
    running sessions end).
    """

    def __init__(
        self,
        config: DatabaseConfig,
        *,
        resolver: TenantUrlResolver | None = None,
        settings: DatabaseSettings | None = None,
        max_engines: int | None = None,
        connection_budget: int | None = None,
        registry: bool | None = None,
    ) -> None:
        self.config = config
        self._settings = settings
        self._resolver = resolver
        self._max_engines = max_engines
        self._connection_budget = connection_budget
        if registry and config.database_tenancy is None:
            raise ConfigurationError(
                f"The {config.name} database has no tenant registry (DatabaseConfig."
                "database_tenancy); registry=True needs one."
            )
        self._registry = registry
        self._control: SQLAlchemyDatabase | None = None
        self._lookup: RegistryLookup | None = None
        self._sweep: asyncio.Task[None] | None = None
        self._sweep_again = False
        self._cache: EngineCache | None = None
        # Reentrant: building the cache builds the registry lookup, which takes it too.
        self._lock = threading.RLock()
        # Model lookups only; it never builds engines.
        self._models = SQLAlchemyDatabase(config, settings=settings)
        self._columns: ConstraintColumns | None = None
        track(self)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def settings(self) -> DatabaseSettings:
        return self._settings if self._settings is not None else self.config.settings()

    @property
    def cache(self) -> EngineCache:
        """The engine cache, created on first use."""
        cache = self._cache
        if cache is None:
            with self._lock:
                if self._cache is None:
                    self._cache = self._build_cache()
                cache = self._cache
        return cache

    # the control registry ------------------------------------------------------------

    @property
    def uses_registry(self) -> bool:
        """Whether tenants are also looked up in the control registry (see the class)."""
        if self._registry is not None:
            return self._registry
        return (
            self.config.database_tenancy is not None
            and self._resolver is None
            and self.settings.multi_tenant
        )

    @property
    def control(self) -> SQLAlchemyDatabase:
        """The control database (the settings' main URL) with a small pool, for the registry."""
        control = self._control
        if control is None:
            tenancy = self.config.database_tenancy
            if tenancy is None:
                raise ConfigurationError(f"The {self.name} database has no tenant registry.")
            with self._lock:
                if self._control is None:
                    small = self.settings.model_copy(
                        update={
                            "pool_size": CONTROL_POOL_SIZE,
                            "max_overflow": CONTROL_MAX_OVERFLOW,
                        }
                    )
                    self._control = SQLAlchemyDatabase(tenancy.registry, settings=small)
                control = self._control
        return control

    @property
    def registry_lookup(self) -> RegistryLookup | None:
        """Cached answers from the control registry; None when this database does not use it."""
        lookup = self._lookup
        if lookup is None and self.uses_registry:
            tenancy = self.config.database_tenancy
            assert tenancy is not None  # checked in __init__
            control = self.control
            with self._lock:
                if self._lookup is None:
                    settings = self.settings
                    lookup = RegistryLookup(
                        tenancy.model,
                        lambda: control.engines,
                        listen_url=settings.registry_listen_target,
                        translator=control.translate,
                        connect_timeout=float(settings.connect_timeout),
                        application_name=settings.application_name,
                    )
                    lookup.subscribe(self._registry_changed)
                    self._lookup = lookup
                lookup = self._lookup
        return lookup

    def _control_url(self) -> URL:
        return self.control.engines.url

    def _registry_changed(self) -> None:
        """On the listener's loop: drop engines of tenants the registry no longer serves."""
        if self._cache is None or not self._cache.stats().live:
            return
        if self._sweep is not None and not self._sweep.done():
            self._sweep_again = True  # a change during a sweep: look again after it
            return
        self._sweep = asyncio.get_running_loop().create_task(self._drop_unserved())

    async def _drop_unserved(self) -> None:
        lookup, cache = self._lookup, self._cache
        if lookup is None or cache is None:
            return
        static = self._static_tenants()
        again = True
        while again:
            self._sweep_again = False
            urls = cache.urls()
            live = [slug for slug in urls if slug not in static]
            try:
                rows = await lookup.tenants(live)
            except DatabaseError as exc:
                log.warning("could not re-read the registry after a change: %s", exc)
                return
            for slug in live:
                row = rows.get(slug)
                if row is None or row.status is not TenantStatus.ACTIVE:
                    log.info("tenant %r is no longer active: dropping its engines", slug)
                elif not self._still_at(row, urls[slug]):
                    log.info("tenant %r was moved: dropping the engines of its old place", slug)
                else:
                    continue
                # Evicted now; disposed once its running sessions end.
                with contextlib.suppress(DatabaseError):
                    await cache.cleanup(slug)
            again = self._sweep_again

    def _still_at(self, row: TenantEntry, url: URL) -> bool:
        """Whether registry row ``row`` still places its tenant's database at ``url``."""
        try:
            placed = self._registry_url(row)
        except DatabaseError:
            return False
        return placed.set(password=None) == url.set(password=None)

    def _registry_url(self, row: TenantEntry) -> URL:
        base = self._server_url(row.server) if row.server is not None else self._control_url()
        return base.set(database=row.location)

    def _server_url(self, name: str) -> URL:
        """The primary URL of server ``name`` (``<PREFIX>SERVERS``)."""
        settings = self.settings
        server = settings.fleet().get(name)
        if server is None:
            raise ConfigurationError(
                f"A tenant of the {self.name} database is placed on server {name!r}, which "
                f"{settings.servers_variable} does not list (it lists "
                f"{', '.join(settings.fleet()) or 'none'}): add the server, or move the tenant."
            )
        return server.primary

    async def _moved(self, slug: str, leased: URL, exc: DatabaseError) -> TenantMovedError | None:
        """After a failure that says the tenant's database is not there (missing, access
        revoked): the placement read again; ``TenantMovedError`` when it now names another
        place (its engines are dropped; the unit of work may run again there)."""
        lookup = self._lookup
        if lookup is None or not _gone(exc):
            return None
        try:
            row = await lookup.tenant_now(slug)
        except DatabaseError:
            return None
        if row is not None and row.status is TenantStatus.ACTIVE and self._still_at(row, leased):
            return None
        with contextlib.suppress(DatabaseError):
            await self.cache.cleanup(slug)
        where = "gone from the registry" if row is None else f"now on server {row.server}"
        return TenantMovedError(slug, f"database {leased.database} is not there; {where}")

    def _static_tenants(self) -> frozenset[str]:
        resolvers = self._first_resolvers()
        return frozenset(
            slug
            for resolver in resolvers
            if isinstance(resolver, StaticTenantUrlResolver)
            for slug in resolver.tenants
        )

    def _first_resolvers(self) -> tuple[TenantUrlResolver, ...]:
        cache = self._cache
        if cache is None:
            return ()
        resolver = cache.resolver
        if isinstance(resolver, ChainedTenantUrlResolver):
            return resolver.resolvers
        return (resolver,)

    def _replica_servers(self) -> list[ServerSettings]:
        """The servers of the fleet that have replicas (``<PREFIX>SERVERS``)."""
        return [server for server in self.settings.fleet().values() if server.replicas]

    def _tenant_replicas(
        self, url: URL, settings: DatabaseSettings, primary: Callable[[], AsyncEngine]
    ) -> ReplicaSet | None:
        """The replica set of a tenant database on a server with replicas, else None.

        A physical replica holds every database of its primary: each replica URL is used
        with the tenant's database name and credentials.
        """
        server = self.settings.server_of(url)
        if server is None or not server.replicas:
            return None
        tenant_server = dataclasses.replace(
            server,
            replicas=tuple(
                replica.set(database=url.database, username=url.username, password=url.password)
                for replica in server.replicas
            ),
        )
        return ReplicaSet(tenant_server, settings, database=self.name, primary=primary)

    def _build_cache(self) -> EngineCache:
        settings = self.settings
        per_tenant = settings if isinstance(settings, TenantDatabaseSettings) else None
        resolver = self._resolver
        if resolver is None and per_tenant is not None:
            resolver = StaticTenantUrlResolver.from_settings(per_tenant)
        if self.uses_registry:
            lookup = self.registry_lookup
            assert lookup is not None
            registry = RegistryTenantUrlResolver(lookup, self._control_url, self._server_url)
            resolver = (
                registry if resolver is None else ChainedTenantUrlResolver(resolver, registry)
            )
        if resolver is None:
            raise ConfigurationError(
                f"The {self.name} database has no tenant resolver: pass resolver=..., "
                "give it settings that derive from TenantDatabaseSettings, or a registry."
            )
        max_engines = self._max_engines or (per_tenant.tenant_max_engines if per_tenant else 20)
        budget = self._connection_budget or (
            per_tenant.tenant_connection_budget if per_tenant else max_engines * 5
        )
        with_replicas = self._replica_servers()
        return EngineCache(
            resolver,
            settings,
            max_engines=max_engines,
            connection_budget=budget,
            name=self.name,
            replicas=max((len(s.replicas) for s in with_replicas), default=0),
            replica_set=self._tenant_replicas if with_replicas else None,
        )

    # tenant directory (db_shared.TenantDirectory) ---------------------------------------

    @property
    def multi_tenant(self) -> bool:
        return True

    async def tenant_exists(self, slug: str) -> bool:
        """Whether ``slug`` is a tenant this database serves (no tenant database is opened).

        A tenant the registry has suspended raises ``TenantSuspendedError``.
        """
        try:
            await self.cache.resolver.resolve(slug)
        except (UnknownTenantError, InvalidTenantError):
            return False
        return True

    async def tenant_for_host(self, host: str) -> str | None:
        """The slug of the tenant the control registry's domains name for ``host``."""
        lookup = self.registry_lookup
        return None if lookup is None else await lookup.tenant_for_host(host)

    def _unit(
        self, tenant: Tenant, engines: Engines, replicas: ReplicaSet | None = None
    ) -> _TenantUnitOfWork:
        if self._columns is None:
            self._columns = ConstraintColumns(self.config.metadata)
        return _TenantUnitOfWork(
            self.config, self.settings, engines, self._columns, tenant.slug, replicas
        )

    # units of work -------------------------------------------------------------------

    def session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A unit of work on the current tenant's database; on a server with replicas, one
        that wrote records the WAL position for read-your-writes (``db_shared.positions``)."""
        return self._unit_of_work(read=False)

    def read_session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A read-only unit of work on the current tenant's database.

        When the tenant's database is on a server with replicas (``<PREFIX>SERVERS``), it
        runs on a replica within the lag bound that has replayed what this context must
        see, with the tenant's database name and credentials; else (or a replica down or
        behind) on the tenant's primary."""
        return self._unit_of_work(read=True)

    @asynccontextmanager
    async def _unit_of_work(self, *, read: bool) -> AsyncIterator[AsyncSession]:
        """The current tenant's unit of work; one that finds its database gone from where
        it was leased raises ``TenantMovedError`` when the registry now places it elsewhere."""
        tenant = current_tenant()
        leased: URL | None = None
        try:
            async with self.cache.lease_with_replicas(tenant) as (engines, replicas):
                leased = engines.url
                unit = self._unit(tenant, engines, replicas)
                async with unit.read_session() if read else unit.session() as session:
                    yield session
        except DatabaseError as exc:
            moved = None if leased is None else await self._moved(tenant.slug, leased, exc)
            if moved is not None:
                raise moved from exc
            raise

    @contextmanager
    def sync_session(self) -> Iterator[Session]:
        tenant = current_tenant()
        with (
            self.cache.lease_sync(tenant) as engines,
            self._unit(tenant, engines).sync_session() as session,
        ):
            yield session

    def model(self, table: type[T]) -> type[T]:
        return self._models.model(table)

    # health and lifecycle ------------------------------------------------------------

    async def ping(self) -> None:
        """``SELECT 1`` on the current tenant's database."""
        tenant = current_tenant()
        async with self.cache.lease(tenant) as engines:
            await self._unit(tenant, engines).ping()

    def ping_sync(self) -> None:
        tenant = current_tenant()
        with self.cache.lease_sync(tenant) as engines:
            self._unit(tenant, engines).ping_sync()

    async def ping_tenants(self, timeout: float | None = None) -> dict[str, str | None]:
        """Ping every tenant's database at once: slug -> None when it answered, else why.

        The tenants are those of a static map, and the ones with engines in the cache (a
        callable resolver or a registry of many tenants is not listed). A tenant that does
        not answer within ``timeout`` (default: the connect timeout) is reported, never
        waited on longer.
        """
        cache = self.cache
        static = self._static_tenants()
        slugs = (*sorted(static), *(s for s in cache.stats().live if s not in static))
        limit = timeout if timeout is not None else float(self.settings.connect_timeout)

        async def one(slug: str) -> str | None:
            try:
                with tenant_context(slug):
                    await asyncio.wait_for(self.ping(), limit)
            except DatabaseError as exc:
                return str(exc)
            except TimeoutError:
                return f"no answer within {limit:g} s"
            return None

        results = await asyncio.gather(*(one(slug) for slug in slugs))
        return dict(zip(slugs, results, strict=True))

    async def cleanup(self, tenant: TenantLike | None = None) -> None:
        """Dispose one tenant's engines, or all of them (see ``EngineCache.cleanup``)."""
        if self._cache is not None:
            await self._cache.cleanup(tenant)

    def cleanup_sync(self, tenant: TenantLike | None = None) -> None:
        if self._cache is not None:
            self._cache.cleanup_sync(tenant)

    async def dispose(self) -> None:
        """Dispose every tenant's engines and the registry's (app shutdown); the next use
        builds them again."""
        sweep, self._sweep = self._sweep, None
        if sweep is not None and not sweep.done():
            sweep.cancel()
        if self._lookup is not None:
            await self._lookup.aclose()
        await self.cleanup()
        if self._control is not None:
            await self._control.dispose()

    def dispose_sync(self) -> None:
        if self._lookup is not None:
            self._lookup.close()
        self.cleanup_sync()
        if self._control is not None:
            self._control.dispose_sync()

    def __repr__(self) -> str:
        return f"TenantRoutedDatabase({self.name})"


def _gone(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was translated from) says the tenant database is not
    there: its SQLSTATE, or at connect time (no SQLSTATE) the server's words."""
    seen: BaseException | None = exc
    while seen is not None:
        if sqlstate(seen) in TENANT_GONE_SQLSTATES:
            return True
        if isinstance(seen, TenantDatabaseUnavailableError) and any(
            words in str(seen) for words in _GONE_WORDS
        ):
            return True
        seen = seen.__cause__
    return False
