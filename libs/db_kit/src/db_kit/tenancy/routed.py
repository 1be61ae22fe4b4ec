"""``TenantRoutedDatabase``: the ``db_shared.Database`` of "the current tenant" for a
database-per-tenant library; each unit of work reads ``current_tenant()`` and runs on
that tenant's database, through the engine cache."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from db_kit.config import DatabaseConfig
from db_kit.database import SQLAlchemyDatabase, track
from db_kit.engine import Engines
from db_kit.errors import ConstraintColumns
from db_kit.settings import DatabaseSettings
from db_kit.tenancy.engine_cache import EngineCache, TenantDatabaseUnavailableError
from db_kit.tenancy.url_resolvers import (
    StaticTenantUrlResolver,
    TenantDatabaseSettings,
    TenantUrlResolver,
)
from db_shared.errors import ConfigurationError, DatabaseError, DatabaseUnavailableError
from db_shared.tenancy import (
    InvalidTenantError,
    Tenant,
    TenantLike,
    UnknownTenantError,
    current_tenant,
    tenant_context,
)

T = TypeVar("T")


# the Database of the current tenant -----------------------------------------------------


class _TenantUnitOfWork(SQLAlchemyDatabase):
    """``SQLAlchemyDatabase``'s units of work and error translation on one tenant's engines.

    Short-lived (one per lease) and never disposed itself: the ``EngineCache`` owns the
    engines (so neither ``dispose_all`` nor the fork hook may touch it).
    """

    _tracked = False

    def __init__(
        self,
        config: DatabaseConfig,
        settings: DatabaseSettings,
        engines: Engines,
        columns: ConstraintColumns,
        tenant: str,
    ) -> None:
        super().__init__(config, settings=settings, url=engines.url, multi_tenant=False)
        self._engines = engines
        self._columns = columns
        self.tenant = tenant

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
    """

    def __init__(
        self,
        config: DatabaseConfig,
        *,
        resolver: TenantUrlResolver | None = None,
        settings: DatabaseSettings | None = None,
        max_engines: int | None = None,
        connection_budget: int | None = None,
    ) -> None:
        self.config = config
        self._settings = settings
        self._resolver = resolver
        self._max_engines = max_engines
        self._connection_budget = connection_budget
        self._cache: EngineCache | None = None
        self._lock = threading.Lock()
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

    def _build_cache(self) -> EngineCache:
        settings = self.settings
        per_tenant = settings if isinstance(settings, TenantDatabaseSettings) else None
        resolver = self._resolver
        if resolver is None:
            if per_tenant is None:
                raise ConfigurationError(
                    f"The {self.name} database has no tenant resolver: pass resolver=... or "
                    "give it settings that derive from TenantDatabaseSettings."
                )
            resolver = StaticTenantUrlResolver.from_settings(per_tenant)
        max_engines = self._max_engines or (per_tenant.tenant_max_engines if per_tenant else 20)
        budget = self._connection_budget or (
            per_tenant.tenant_connection_budget if per_tenant else max_engines * 5
        )
        return EngineCache(
            resolver, settings, max_engines=max_engines, connection_budget=budget, name=self.name
        )

    # tenant directory (db_shared.TenantDirectory) ---------------------------------------

    @property
    def multi_tenant(self) -> bool:
        return True

    async def tenant_exists(self, slug: str) -> bool:
        """Whether the resolver knows ``slug`` (no connection is opened)."""
        try:
            await self.cache.resolver.resolve(slug)
        except (UnknownTenantError, InvalidTenantError):
            return False
        return True

    def _unit(self, tenant: Tenant, engines: Engines) -> _TenantUnitOfWork:
        if self._columns is None:
            self._columns = ConstraintColumns(self.config.metadata)
        return _TenantUnitOfWork(self.config, self.settings, engines, self._columns, tenant.slug)

    # units of work -------------------------------------------------------------------

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        tenant = current_tenant()
        async with (
            self.cache.lease(tenant) as engines,
            self._unit(tenant, engines).session() as session,
        ):
            yield session

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

        The tenants are those of a static map, else the ones with engines in the cache (a
        callable resolver cannot list its tenants). A tenant that does not answer within
        ``timeout`` (default: the connect timeout) is reported, never waited on longer.
        """
        resolver = self.cache.resolver
        if isinstance(resolver, StaticTenantUrlResolver):
            slugs: tuple[str, ...] = resolver.tenants
        else:
            slugs = self.cache.stats().live
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
        """Dispose every tenant's engines (app shutdown); the next use builds them again."""
        await self.cleanup()

    def dispose_sync(self) -> None:
        self.cleanup_sync()

    def __repr__(self) -> str:
        return f"TenantRoutedDatabase({self.name})"
