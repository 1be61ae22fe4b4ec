"""Database-per-tenant: each tenant's data lives in its own PostgreSQL database.

Three parts, each usable alone:

* a resolver maps a tenant slug to its database URL: ``StaticTenantResolver`` (a fixed
  map such as US/EU, from settings) or ``CallableTenantResolver`` (a registry lookup,
  sync or async);
* ``EngineCache`` keeps the engines of recently used tenants in an LRU bounded by an
  engine count *and* a total connection budget, and disposes an evicted tenant's engines
  only once its last session has ended;
* ``TenantRoutedDatabase`` is the ``db_shared.Database`` of "the current tenant": each
  unit of work reads ``current_tenant()`` and runs on that tenant's database.

``TenantDatabaseMigrator`` creates, migrates and drops the tenant databases (the
``db NAME tenants`` commands of a database-per-tenant library).

The budget is kept structurally: the cache has ``max_engines`` slots, each tenant's
pools may open at most ``connection_budget // max_engines`` connections, and a slot is
held from the moment its engines are built until they are disposed with every
connection closed (an evicted tenant that still has sessions keeps its slot until the
last one ends). A closed connection's server process lingers for a moment (it is still
in ``pg_stat_activity``), so before any tenant engine opens a connection it waits until
the server has ended those it closed. So the server connections of this process's
tenant engines never exceed the budget, whatever the load, as PostgreSQL counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import math
import os
import selectors
import socket
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Protocol, TypeVar, runtime_checkable

from pydantic import AliasChoices, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from db_kit.config import DatabaseConfig
from db_kit.database import SQLAlchemyDatabase, track
from db_kit.engine import Engines, configure_logging, engine_kwargs
from db_kit.errors import ConstraintColumns
from db_kit.migrations import Migrator
from db_kit.observability import cursor_factories, instrument
from db_kit.settings import _ACCEPTED_SCHEMES, DRIVER, DatabaseSettings
from db_shared.errors import ConfigurationError, DatabaseError, DatabaseUnavailableError
from db_shared.tenancy import (
    InvalidTenantError,
    Tenant,
    TenantLike,
    UnknownTenantError,
    as_tenant,
    current_tenant,
    tenant_context,
    validate_tenant_slug,
)

T = TypeVar("T")

# Passwords refused in production, as for the main URL.
PLACEHOLDER_PASSWORDS = frozenset({"password", "changeme", "postgres", "secret"})
# Databases a tenant may never name: CREATE/DROP DATABASE on them would be a disaster.
RESERVED_DATABASES = frozenset({"postgres", "template0", "template1"})


# URLs and settings --------------------------------------------------------------------


def tenant_url(value: object, *, tenant: str, source: str, production: bool = False) -> URL:
    """``value`` as a psycopg 3 URL for ``tenant``, or ``ConfigurationError`` naming ``source``.

    Accepts ``postgresql://``, ``postgres://`` and ``postgresql+psycopg://`` like the main
    URL and normalises the driver. Messages never contain the password.
    """
    if isinstance(value, URL):
        url = value
    elif isinstance(value, str) and value.strip():
        try:
            url = make_url(value.strip())
        except (ArgumentError, ValueError):
            raise ConfigurationError(
                f"{source}: the URL of tenant {tenant!r} is not a valid database URL "
                "(expected postgresql://user:secret@host:5432/database)."
            ) from None
    else:
        raise ConfigurationError(
            f"{source}: tenant {tenant!r} needs a database URL, got {type(value).__name__}."
        )
    shown = url.render_as_string(hide_password=True)
    if url.drivername not in _ACCEPTED_SCHEMES:
        raise ConfigurationError(
            f"{source}: tenant {tenant!r} uses the driver '{url.drivername}' ({shown}), but "
            "this project talks to PostgreSQL through psycopg 3: use postgresql:// or "
            "postgresql+psycopg://."
        )
    if not url.database:
        raise ConfigurationError(
            f"{source}: the URL of tenant {tenant!r} names no database ({shown})."
        )
    if production and url.password in PLACEHOLDER_PASSWORDS:
        raise ConfigurationError(
            f"{source}: tenant {tenant!r} uses a placeholder password in production ({shown})."
        )
    return url.set(drivername=DRIVER)


def _parse_tenant_urls(value: object, *, source: str, production: bool) -> dict[str, URL]:
    """Slug -> normalised URL from a mapping or its JSON text; slugs validated first."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(
                f"{source} is not valid JSON ({exc.msg} at character {exc.pos}); expected an "
                'object such as {"us": "postgresql://...", "eu": "postgresql://..."}.'
            ) from None
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{source} must map tenant slugs to URLs, got {type(value).__name__}."
        )
    return {
        validate_tenant_slug(slug): tenant_url(
            url, tenant=slug, source=source, production=production
        )
        for slug, url in value.items()
    }


TenantUrls = Annotated[dict[str, str], NoDecode]


def tenant_urls_field(variable: str) -> Any:
    """The tenant map of a database-per-tenant lib's settings, read from ``variable``."""
    return Field(default_factory=dict, validation_alias=AliasChoices(variable), repr=False)


class TenantDatabaseSettings(DatabaseSettings):
    """Settings of a database-per-tenant library: the tenants' URLs and the cache's bounds.

    A db lib declares its variable::

        tenant_urls_variable: ClassVar[str] = "BIBIKOS_TENANT_URLS"
        tenant_urls: TenantUrls = tenant_urls_field("BIBIKOS_TENANT_URLS")

    ``tenant_urls`` holds a JSON object ``{"us": "postgresql://...", ...}``; slugs and URLs
    are validated at load time, drivers normalised. The field is never part of ``repr``.
    """

    tenant_urls_variable: ClassVar[str] = "TENANT_URLS"

    tenant_urls: TenantUrls = Field(default_factory=dict, repr=False)
    # At most this many tenants have engines at once (least recently used ones go first).
    tenant_max_engines: int = Field(default=20, ge=1, le=10_000)
    # Server connections all tenant engines of this process may hold together.
    tenant_connection_budget: int = Field(default=100, ge=2, le=1_000_000)

    @field_validator("tenant_urls", mode="before")
    @classmethod
    def _validate_tenant_urls(cls, value: object, info: ValidationInfo) -> dict[str, str]:
        production = str(info.data.get("environment", "")) == "production"
        try:
            urls = _parse_tenant_urls(value, source=cls.tenant_urls_variable, production=production)
        except DatabaseError as exc:  # pydantic reports ValueErrors only
            raise ValueError(str(exc)) from None
        return {slug: url.render_as_string(hide_password=False) for slug, url in urls.items()}

    @model_validator(mode="after")
    def _budget_fits_engines(self) -> TenantDatabaseSettings:
        prefix = str(self.model_config.get("env_prefix", "")).upper()
        needed = self.tenant_max_engines * 2
        if self.tenant_connection_budget < needed:
            raise ValueError(
                f"{prefix}TENANT_CONNECTION_BUDGET={self.tenant_connection_budget} cannot give "
                f"each of the {prefix}TENANT_MAX_ENGINES={self.tenant_max_engines} tenant "
                f"engines its 2 connections (one async, one sync); raise the budget to at "
                f"least {needed} or lower the engine count"
            )
        return self

    def tenant_url_map(self) -> dict[str, URL]:
        """The configured tenants and their URLs (with passwords: do not print them)."""
        return {slug: make_url(url) for slug, url in self.tenant_urls.items()}


# resolvers ----------------------------------------------------------------------------


@runtime_checkable
class TenantResolver(Protocol):
    """Maps a tenant slug to its database URL; ``UnknownTenantError`` when there is none."""

    async def resolve(self, slug: str) -> URL:
        """The tenant's URL, from async code (may await a registry)."""
        ...

    def resolve_sync(self, slug: str) -> URL:
        """The tenant's URL, from sync code (scripts, the CLI, sync sessions)."""
        ...


class StaticTenantResolver:
    """A fixed map of tenants to URLs, such as ``{"us": ..., "eu": ...}`` from settings."""

    def __init__(self, urls: Mapping[str, URL | str], *, source: str = "tenant map") -> None:
        self.source = source
        self._urls = _parse_tenant_urls(urls, source=source, production=False)

    @classmethod
    def from_settings(cls, settings: TenantDatabaseSettings) -> StaticTenantResolver:
        return cls(settings.tenant_url_map(), source=settings.tenant_urls_variable)

    @property
    def tenants(self) -> tuple[str, ...]:
        """The configured slugs, sorted."""
        return tuple(sorted(self._urls))

    def urls(self) -> dict[str, URL]:
        """Slug -> URL, sorted by slug (URLs carry passwords: do not print them)."""
        return {slug: self._urls[slug] for slug in self.tenants}

    def resolve_sync(self, slug: str) -> URL:
        url = self._urls.get(validate_tenant_slug(slug))
        if url is None:
            raise UnknownTenantError(slug)
        return url

    async def resolve(self, slug: str) -> URL:
        return self.resolve_sync(slug)

    def __repr__(self) -> str:
        shown = {s: u.render_as_string(hide_password=True) for s, u in self.urls().items()}
        return f"StaticTenantResolver({shown})"


ResolvedUrl = URL | str | None
ResolverFunction = Callable[[str], ResolvedUrl | Awaitable[ResolvedUrl]]


async def _awaited(value: Awaitable[ResolvedUrl]) -> ResolvedUrl:
    return await value


class CallableTenantResolver:
    """Resolves through ``fn(slug)``: sync or async, returning a URL, a str, or None.

    None means "no such tenant" (``UnknownTenantError``). The slug is validated before
    ``fn`` sees it. ``fn`` runs on the caller's thread: make a registry lookup async
    rather than block the event loop. An async ``fn`` called from sync code runs in a
    fresh event loop when none is running in that thread.
    """

    def __init__(self, fn: ResolverFunction, *, source: str | None = None) -> None:
        self.fn = fn
        self.source = source or f"tenant resolver {getattr(fn, '__qualname__', repr(fn))}"

    def _checked(self, slug: str, value: object) -> URL:
        if value is None:
            raise UnknownTenantError(slug)
        if not isinstance(value, URL | str):
            raise ConfigurationError(
                f"{self.source} returned {type(value).__name__} for tenant {slug!r}; return a "
                "URL, a str, or None for an unknown tenant."
            )
        return tenant_url(value, tenant=slug, source=self.source)

    async def resolve(self, slug: str) -> URL:
        slug = validate_tenant_slug(slug)
        found = self.fn(slug)
        if inspect.isawaitable(found):
            found = await found
        return self._checked(slug, found)

    def resolve_sync(self, slug: str) -> URL:
        slug = validate_tenant_slug(slug)
        found = self.fn(slug)
        if inspect.isawaitable(found):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                found = asyncio.run(_awaited(found))
            else:
                if inspect.iscoroutine(found):
                    found.close()
                raise ConfigurationError(
                    f"{self.source} is async, but a sync session was asked for inside a "
                    "running event loop; use `async with db.session()` there."
                )
        return self._checked(slug, found)


# errors -------------------------------------------------------------------------------


class TenantDatabaseUnavailableError(DatabaseUnavailableError):
    """One tenant's database cannot be used now; other tenants are not affected."""

    def __init__(
        self, tenant: str, message: str, *, host: str | None = None, port: int | None = None
    ) -> None:
        self.tenant = tenant
        super().__init__(f"Tenant {tenant!r}: {message}", host=host, port=port)


def _sqlstate(exc: BaseException) -> str | None:
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    state = getattr(orig, "sqlstate", None)
    return state if isinstance(state, str) else None


# the engine cache ---------------------------------------------------------------------


@dataclass(eq=False)
class _Entry:
    slug: str
    engines: Engines
    in_use: int = 0
    evicted: bool = False
    disposing: bool = False
    # The event loop of the latest async use: async connections are closed on it.
    loop: asyncio.AbstractEventLoop | None = None


class _Waiter:
    """A caller waiting for a slot: a thread (Event) or a task (Future on its loop)."""

    def __init__(self, slug: str, loop: asyncio.AbstractEventLoop | None, since: float) -> None:
        self.slug = slug
        self.loop = loop
        self.since = since  # when its caller started waiting (monotonic)
        self.event = threading.Event()
        self.future: asyncio.Future[None] | None = loop.create_future() if loop else None

    def wake(self) -> None:
        if self.loop is None:
            self.event.set()
            return
        with contextlib.suppress(RuntimeError):  # the waiting loop has closed
            self.loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(None)


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of an ``EngineCache`` for logs, metrics and tests."""

    live: tuple[str, ...]  # least recently used first
    draining: tuple[str, ...]  # evicted, waiting for their last session to end
    in_use: Mapping[str, int]
    created: int
    evicted: int
    disposed: int
    hits: int
    misses: int


@dataclass
class _Counters:
    created: int = 0
    evicted: int = 0
    disposed: int = 0
    hits: int = 0
    misses: int = 0


@dataclass
class _Claim:
    entry: _Entry | None = None
    victim: _Entry | None = None
    waiter: _Waiter | None = None
    retry_at: float = math.inf  # claim again then, even if not woken


class EngineCache:
    """Per-tenant ``Engines`` in an LRU bounded by an engine count and a connection budget.

    ``lease(tenant)`` / ``lease_sync(tenant)`` yield the tenant's engines for the duration
    of a unit of work. On a miss the resolver gives the URL and the engines are built in a
    free slot; with no free slot the least recently used idle tenant is disposed. When
    every tenant is busy the caller waits (up to ``wait_timeout``); once it has waited
    ``eviction_grace`` the least recently used busy tenant is evicted: it takes no new
    leases and is disposed as soon as its last one ends. (The grace lets busy tenants serve
    their bursts instead of thrashing when more tenants are active than there are slots.)
    Concurrent first use of a tenant builds one set of engines.

    Each tenant's async pool holds at most ``per_tenant_connections - sync_connections``
    connections and its sync pool ``sync_connections``; a slot is free again only after
    its engines are disposed, so ``max_engines * per_tenant_connections <= budget`` bounds
    the server connections of all tenant engines together.
    """

    def __init__(
        self,
        resolver: TenantResolver,
        settings: DatabaseSettings,
        *,
        max_engines: int,
        connection_budget: int,
        sync_connections: int = 1,
        wait_timeout: float | None = None,
        eviction_grace: float = 0.05,
        name: str = "tenant",
    ) -> None:
        if max_engines < 1 or sync_connections < 1:
            raise ConfigurationError(
                "An engine cache needs max_engines >= 1 and sync_connections >= 1."
            )
        per_slot = connection_budget // max_engines
        if per_slot < sync_connections + 1:
            raise ConfigurationError(
                f"A connection budget of {connection_budget} cannot give each of {max_engines} "
                f"tenant engines {sync_connections + 1} connections ({sync_connections} sync, "
                f"at least 1 async); raise it to {max_engines * (sync_connections + 1)} or "
                "lower the engine count."
            )
        async_max = min(settings.pool_size + settings.max_overflow, per_slot - sync_connections)
        async_pool = min(settings.pool_size, async_max)
        self.resolver = resolver
        self.name = name  # the database lib's name: labels the engines' metrics
        self._cursors = cursor_factories(name, settings)
        self.max_engines = max_engines
        self.connection_budget = connection_budget
        self.per_tenant_connections = async_max + sync_connections
        self.wait_timeout = settings.pool_timeout if wait_timeout is None else wait_timeout
        self.eviction_grace = eviction_grace
        self._async_settings = settings.model_copy(
            update={"pool_size": async_pool, "max_overflow": async_max - async_pool}
        )
        self._sync_settings = settings.model_copy(
            update={"pool_size": sync_connections, "max_overflow": 0}
        )
        configure_logging(settings)
        self._lock = threading.Lock()
        self._live: OrderedDict[str, _Entry] = OrderedDict()
        self._draining: list[_Entry] = []
        self._waiters: list[_Waiter] = []
        self._counters = _Counters()
        # Sockets of closed connections whose server process may not have ended yet.
        self._closing: list[socket.socket] = []
        self._closing_lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self.close_wait = min(1.0, float(settings.connect_timeout))
        cache = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget_after_fork(cache))

    @classmethod
    def from_settings(
        cls, settings: TenantDatabaseSettings, resolver: TenantResolver | None = None
    ) -> EngineCache:
        """A cache bounded by the settings' engine count and budget (static map by default)."""
        return cls(
            resolver or StaticTenantResolver.from_settings(settings),
            settings,
            max_engines=settings.tenant_max_engines,
            connection_budget=settings.tenant_connection_budget,
        )

    def _after_fork(self) -> None:
        """In a forked child: drop the parent's engines unclosed (their sockets are the
        parent's) and start empty, so pre-fork servers get fresh connections per worker."""
        self._lock = threading.Lock()
        self._closing_lock = threading.Lock()
        self._drain_lock = threading.Lock()
        for entry in [*self._live.values(), *self._draining]:
            entry.engines.sync_engine.dispose(close=False)
            entry.engines.async_engine.sync_engine.dispose(close=False)
        self._live.clear()
        self._draining.clear()
        self._waiters.clear()
        for kept in self._closing:
            kept.close()  # our copy only: the parent's socket is untouched
        self._closing.clear()

    # introspection ---------------------------------------------------------------------

    def stats(self) -> CacheStats:
        with self._lock:
            entries = [*self._live.values(), *self._draining]
            c = self._counters
            return CacheStats(
                live=tuple(self._live),
                draining=tuple(e.slug for e in self._draining),
                in_use={e.slug: e.in_use for e in entries if e.in_use},
                created=c.created,
                evicted=c.evicted,
                disposed=c.disposed,
                hits=c.hits,
                misses=c.misses,
            )

    def __repr__(self) -> str:
        return (
            f"EngineCache(max_engines={self.max_engines}, "
            f"connection_budget={self.connection_budget}, tenants={list(self._live)})"
        )

    # leases ----------------------------------------------------------------------------

    @asynccontextmanager
    async def lease(self, tenant: TenantLike) -> AsyncIterator[Engines]:
        """The tenant's engines, kept from disposal until the block ends."""
        entry = await self._acquire(as_tenant(tenant).slug)
        try:
            yield entry.engines
        finally:
            if self._release(entry):
                await self._dispose_shielded(entry)

    @contextmanager
    def lease_sync(self, tenant: TenantLike) -> Iterator[Engines]:
        """``lease`` for sync code (do not call it from a thread running an event loop)."""
        entry = self._acquire_sync(as_tenant(tenant).slug)
        try:
            yield entry.engines
        finally:
            if self._release(entry):
                self._dispose_sync(entry)

    async def _acquire(self, slug: str) -> _Entry:
        loop = asyncio.get_running_loop()
        entry = self._hit(slug)
        if entry is None:
            url = await self.resolver.resolve(slug)
            since = time.monotonic()
            deadline = since + self.wait_timeout
            while entry is None:
                claim = self._claim(slug, url, loop, since)
                if claim.victim is not None:
                    await self._dispose_shielded(claim.victim)
                elif claim.waiter is not None:
                    assert claim.waiter.future is not None
                    wait = min(deadline, claim.retry_at) - time.monotonic()
                    try:
                        await asyncio.wait_for(claim.waiter.future, max(0.0, wait))
                    except TimeoutError:
                        if time.monotonic() >= deadline:
                            raise self._no_slot(slug) from None
                    finally:
                        self._forget(claim.waiter)
                entry = claim.entry
        entry.loop = loop
        return entry

    def _acquire_sync(self, slug: str) -> _Entry:
        entry = self._hit(slug)
        if entry is None:
            url = self.resolver.resolve_sync(slug)
            since = time.monotonic()
            deadline = since + self.wait_timeout
            while entry is None:
                claim = self._claim(slug, url, None, since)
                if claim.victim is not None:
                    self._dispose_sync(claim.victim)
                elif claim.waiter is not None:
                    wait = min(deadline, claim.retry_at) - time.monotonic()
                    woken = claim.waiter.event.wait(max(0.0, wait))
                    self._forget(claim.waiter)
                    if not woken and time.monotonic() >= deadline:
                        raise self._no_slot(slug)
                entry = claim.entry
        return entry

    def _no_slot(self, slug: str) -> TenantDatabaseUnavailableError:
        return TenantDatabaseUnavailableError(
            slug,
            f"no engine slot became free within {self.wait_timeout:g}s: all {self.max_engines} "
            f"slots (connection budget {self.connection_budget}) are held by other tenants' "
            "sessions. Raise the engine count and budget, or shorten the sessions.",
        )

    def _hit(self, slug: str) -> _Entry | None:
        with self._lock:
            entry = self._live.get(slug)
            if entry is not None:
                entry.in_use += 1
                self._live.move_to_end(slug)
                self._counters.hits += 1
            else:
                self._counters.misses += 1
            return entry

    def _claim(
        self, slug: str, url: URL, loop: asyncio.AbstractEventLoop | None, since: float
    ) -> _Claim:
        """One step towards engines for ``slug``: use them, free a slot, or wait for one."""
        with self._lock:
            entry = self._live.get(slug)
            if entry is None and len(self._live) + len(self._draining) < self.max_engines:
                # Built under the lock, after the re-check: one set of engines per tenant.
                entry = _Entry(slug, self._build(url))
                self._live[slug] = entry
                self._counters.created += 1
                self._wake_all()  # others waiting for this tenant can use it now
            if entry is not None:
                entry.in_use += 1
                self._live.move_to_end(slug)
                return _Claim(entry=entry)
            idle = next((e for e in self._live.values() if e.in_use == 0), None)
            if idle is not None:
                self._evict(idle)
                idle.disposing = True
                return _Claim(victim=idle)
            waiter = _Waiter(slug, loop, since)
            self._waiters.append(waiter)
            # Every tenant is busy. For each tenant that has waited out the grace, drain one
            # (the least recently used), beyond the drains already under way.
            now = time.monotonic()
            overdue = {w.slug for w in self._waiters if now - w.since >= self.eviction_grace}
            if self._live and len(self._draining) < len(overdue):
                self._evict(next(iter(self._live.values())))
            retry_at = since + self.eviction_grace if slug not in overdue else math.inf
            return _Claim(waiter=waiter, retry_at=retry_at)

    def _build(self, url: URL) -> Engines:
        # Like engine.build_engines, with the sync pool sized apart from the async one.
        async_engine = create_async_engine(
            url, **engine_kwargs(self._async_settings, cursor_factory=self._cursors[1])
        )
        sync_engine = create_engine(
            url, **engine_kwargs(self._sync_settings, cursor_factory=self._cursors[0])
        )
        for engine in (async_engine.sync_engine, sync_engine):
            self._watch_closes(engine)
            instrument(engine, settings=self._async_settings)
        return Engines(
            url=url,
            async_engine=async_engine,
            sync_engine=sync_engine,
            async_sessions=async_sessionmaker(async_engine, expire_on_commit=False),
            sync_sessions=sessionmaker(sync_engine, expire_on_commit=False),
        )

    # closed connections ------------------------------------------------------------------

    def _watch_closes(self, engine: Engine) -> None:
        event.listen(engine, "close", self._closed)
        event.listen(engine, "close_detached", self._closed)
        event.listen(engine, "do_connect", self._before_connect)

    def _closed(self, dbapi_connection: Any, record: Any = None) -> None:
        """Pool event, just before the driver closes: keep the socket to see the server end."""
        driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
        try:
            kept = socket.socket(fileno=os.dup(driver.pgconn.socket))
        except Exception:  # already closed or broken: nothing will linger
            return
        kept.setblocking(False)
        with self._closing_lock:
            self._closing.append(kept)

    def _before_connect(self, dialect: Any, record: Any, cargs: Any, cparams: Any) -> None:
        # Opening a connection while closed ones still count on the server could exceed
        # the budget there; wait for them first (usually well under a millisecond).
        self._drain_closed()

    def _drain_closed(self) -> None:
        """Wait until the server has ended every connection this cache closed so far.

        PostgreSQL closes a backend's socket only after removing it from
        ``pg_stat_activity``, so end-of-file on a kept socket means the backend is gone.
        Gives up after ``close_wait`` seconds (a server that stopped answering).
        """
        with self._drain_lock:
            with self._closing_lock:
                pending, self._closing = self._closing, []
            if not pending:
                return
            with selectors.DefaultSelector() as selector:
                for kept in pending:
                    with contextlib.suppress(OSError):
                        kept.shutdown(socket.SHUT_WR)  # ends it even if no Terminate went out
                    selector.register(kept, selectors.EVENT_READ)
                deadline = time.monotonic() + self.close_wait
                while selector.get_map() and (remaining := deadline - time.monotonic()) > 0:
                    for key, _ in selector.select(remaining):
                        ready: socket.socket = key.fileobj  # type: ignore[assignment]
                        try:
                            if ready.recv(65536):
                                continue
                        except BlockingIOError:
                            continue
                        except OSError:
                            pass
                        selector.unregister(ready)
            for kept in pending:
                kept.close()

    def _evict(self, entry: _Entry) -> None:
        # Caller holds the lock. The entry keeps its slot (in _draining) until disposed.
        del self._live[entry.slug]
        entry.evicted = True
        self._draining.append(entry)
        self._counters.evicted += 1

    def _release(self, entry: _Entry) -> bool:
        """End one lease; True when the caller must now dispose the (evicted) entry."""
        with self._lock:
            entry.in_use -= 1
            if entry.in_use > 0:
                return False
            if entry.evicted and not entry.disposing:
                entry.disposing = True
                return True
            self._wake_all()  # an idle tenant can make room for a waiting one
            return False

    def _forget(self, waiter: _Waiter) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    def _wake_all(self) -> None:
        # Caller holds the lock; each waiter claims again.
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.wake()

    def _freed(self, entry: _Entry) -> None:
        with self._lock:
            self._draining.remove(entry)
            self._counters.disposed += 1
            self._wake_all()

    # disposal --------------------------------------------------------------------------

    async def _dispose_shielded(self, entry: _Entry) -> None:
        # Shielded: a cancelled caller must not leave the slot taken or connections open.
        await asyncio.shield(asyncio.ensure_future(self._dispose_async(entry)))

    async def _dispose_async(self, entry: _Entry) -> None:
        try:
            await entry.engines.async_engine.dispose()
            entry.engines.sync_engine.dispose()
            # Inline, not in a worker thread: threads may all be busy waiting for this slot.
            self._drain_closed()
        finally:
            self._freed(entry)

    def _dispose_sync(self, entry: _Entry) -> None:
        try:
            entry.engines.sync_engine.dispose()
            self._close_async_pool(entry)
            self._drain_closed()
        finally:
            self._freed(entry)

    def _close_async_pool(self, entry: _Entry) -> None:
        """Close the idle async connections of ``entry`` from sync code."""
        engine = entry.engines.async_engine
        pool = engine.sync_engine.pool
        if isinstance(pool, QueuePool) and pool.checkedin() == 0:
            engine.sync_engine.dispose(close=False)  # nothing open (checked-out: none left)
            return
        loop = entry.loop
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if loop is not None and loop is not here and loop.is_running():
            # The connections belong to a loop running in another thread: close them there.
            future = asyncio.run_coroutine_threadsafe(engine.dispose(), loop)
            with contextlib.suppress(Exception):
                future.result(timeout=self.wait_timeout)
                return
        elif here is None:
            asyncio.run(engine.dispose())
            return
        # Sync code on the loop's own thread cannot await: drop them, the driver closes
        # each connection when it is collected.
        engine.sync_engine.dispose(close=False)

    def _take(self, tenant: TenantLike | None) -> list[_Entry]:
        """Evict ``tenant`` (or every tenant); return the idle entries to dispose now."""
        slug = None if tenant is None else as_tenant(tenant).slug
        with self._lock:
            chosen = [e for s, e in self._live.items() if slug is None or s == slug]
            for entry in chosen:
                self._evict(entry)
            idle = [e for e in chosen if e.in_use == 0]
            for entry in idle:
                entry.disposing = True
            return idle

    async def cleanup(self, tenant: TenantLike | None = None) -> None:
        """Dispose one tenant's engines, or every tenant's (the seed's cleanupPrismaConnections).

        Engines with sessions still open are disposed when their last session ends; those
        sessions complete normally. The next use of a tenant builds new engines.
        """
        for entry in self._take(tenant):
            await self._dispose_shielded(entry)

    def cleanup_sync(self, tenant: TenantLike | None = None) -> None:
        """``cleanup`` for sync code (scripts, shutdown hooks without a loop)."""
        for entry in self._take(tenant):
            self._dispose_sync(entry)


def _forget_after_fork(cache: weakref.ref[EngineCache]) -> None:
    found = cache()
    if found is not None:
        found._after_fork()


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
        resolver: TenantResolver | None = None,
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
            resolver = StaticTenantResolver.from_settings(per_tenant)
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
        if isinstance(resolver, StaticTenantResolver):
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


# provisioning: the `db NAME tenants` commands -------------------------------------------


@dataclass(frozen=True)
class TenantDatabaseResult:
    """What one command did to one tenant database."""

    slug: str
    database: str  # host:port/database
    before: str | None
    after: str | None
    status: str  # "created" | "migrated" | "up to date" | "failed"
    error: str | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status == "failed"


@dataclass(frozen=True)
class TenantDatabaseState:
    """A configured tenant database as ``list`` shows it."""

    slug: str
    database: str  # host:port/database
    revision: str | None
    state: str  # "up to date" | "pending" | "missing" | "unreachable"
    error: str | None = None


def _reason(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig else exc
    lines = str(orig).strip().splitlines()
    return (lines[0] if lines else type(orig).__name__)[:500]


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
    resolver: StaticTenantResolver = field(init=False)

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
        self.resolver = StaticTenantResolver(urls, source=source)

    def url_for(self, slug: str, url: URL | str | None = None) -> URL:
        """The tenant's URL: ``url`` when given, else the configured one."""
        slug = validate_tenant_slug(slug)
        if url is not None:
            return tenant_url(url, tenant=slug, source="--url")
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

    def create(self, slug: str, url: URL | str | None = None) -> TenantDatabaseResult:
        """Create the tenant's database when missing, then migrate it to head."""
        target = self.url_for(slug, url)
        name = self._guard(target)
        started = time.perf_counter()
        created = False
        if not self.exists(target):
            with self._server(target) as conn:
                quoted = conn.dialect.identifier_preparer.quote_identifier(name)
                try:
                    conn.execute(text(f"CREATE DATABASE {quoted}"))
                    created = True
                except sa_exc.ProgrammingError as exc:
                    if _sqlstate(exc) != "42P04":  # created meanwhile by a concurrent run
                        raise
        before, after = Migrator(self.db, target).upgrade("head")
        status = "created" if created else ("migrated" if before != after else "up to date")
        return TenantDatabaseResult(
            slug, _shown(target), ",".join(before) or None, ",".join(after) or None, status,
            seconds=time.perf_counter() - started,
        )  # fmt: skip

    def drop(self, slug: str, url: URL | str | None = None, *, force: bool = False) -> bool:
        """Drop the tenant's database; False when it did not exist. ``force`` ends sessions."""
        target = self.url_for(slug, url)
        name = self._guard(target)
        if not self.exists(target):
            return False
        with self._server(target) as conn:
            quoted = conn.dialect.identifier_preparer.quote_identifier(name)
            conn.execute(text(f"DROP DATABASE {quoted}" + (" WITH (FORCE)" if force else "")))
        return True

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
                return TenantDatabaseState(slug, _shown(url), None, "missing")
            with migrator.connect() as conn:
                current = migrator.current(conn)
                conn.rollback()
        except Exception as exc:
            return TenantDatabaseState(slug, _shown(url), None, "unreachable", _reason(exc))
        revision = ",".join(current) or None
        state = "up to date" if revision is not None and revision == head else "pending"
        return TenantDatabaseState(slug, _shown(url), revision, state)

    def states(self) -> list[TenantDatabaseState]:
        head = self.head()
        return [self.state(slug, head) for slug in self.resolver.tenants]

    def migrate_all(
        self, on_result: Callable[[TenantDatabaseResult], None] | None = None
    ) -> list[TenantDatabaseResult]:
        """Upgrade every configured tenant database to head, one after the other.

        A failing tenant is reported (its revision's transaction rolled back) and the
        others still run.
        """
        results: list[TenantDatabaseResult] = []
        for slug, url in self.resolver.urls().items():
            started = time.perf_counter()
            try:
                before, after = Migrator(self.db, url).upgrade("head")
            except Exception as exc:
                result = TenantDatabaseResult(
                    slug, _shown(url), None, None, "failed", _reason(exc),
                    time.perf_counter() - started,
                )  # fmt: skip
            else:
                result = TenantDatabaseResult(
                    slug, _shown(url), ",".join(before) or None, ",".join(after) or None,
                    "migrated" if before != after else "up to date",
                    seconds=time.perf_counter() - started,
                )  # fmt: skip
            results.append(result)
            if on_result is not None:
                on_result(result)
        return results


__all__ = [
    "CacheStats",
    "CallableTenantResolver",
    "EngineCache",
    "StaticTenantResolver",
    "TenantDatabaseMigrator",
    "TenantDatabaseResult",
    "TenantDatabaseSettings",
    "TenantDatabaseState",
    "TenantDatabaseUnavailableError",
    "TenantResolver",
    "TenantRoutedDatabase",
    "TenantUrls",
    "tenant_url",
    "tenant_urls_field",
]
