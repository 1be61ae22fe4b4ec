"""The engine cache of database-per-tenant libraries.

``EngineCache`` keeps the engines of recently used tenants in an LRU bounded by an engine
count *and* a total connection budget, and disposes an evicted tenant's engines only once
its last session has ended.

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
import math
import os
import selectors
import socket
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from db_kit.engine import Engines, build_engines
from db_kit.observability import cursor_factories
from db_kit.replicas import ReplicaSet
from db_kit.settings import DatabaseSettings
from db_kit.tenancy.url_resolvers import (
    StaticTenantUrlResolver,
    TenantDatabaseSettings,
    TenantUrlResolver,
)
from db_shared.errors import ConfigurationError, DatabaseUnavailableError
from db_shared.tenancy import (
    TenantLike,
    as_tenant,
)

T = TypeVar("T")

# Builds a tenant's replica set (None: its database has no replicas): the tenant's URL, the
# settings sizing each replica's pool, and the tenant's primary async engine (sampled).
ReplicaFactory = Callable[[URL, DatabaseSettings, Callable[[], AsyncEngine]], ReplicaSet | None]


# errors -------------------------------------------------------------------------------


class TenantDatabaseUnavailableError(DatabaseUnavailableError):
    """One tenant's database cannot be used now; other tenants are not affected."""

    def __init__(
        self, tenant: str, message: str, *, host: str | None = None, port: int | None = None
    ) -> None:
        self.tenant = tenant
        super().__init__(f"Tenant {tenant!r}: {message}", host=host, port=port)


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
    # The tenant database's read replicas (same slot, counted in its connections).
    replicas: ReplicaSet | None = None


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

    With ``replicas`` (replica engines per tenant) and ``replica_set`` (builds a tenant's
    ``ReplicaSet``, or None when its database has no replicas), a slot's async connections
    are split between the tenant's primary pool and one pool per replica, so replica
    engines live and die with the tenant's slot and stay inside the same budget.
    """

    def __init__(
        self,
        resolver: TenantUrlResolver,
        settings: DatabaseSettings,
        *,
        max_engines: int,
        connection_budget: int,
        sync_connections: int = 1,
        wait_timeout: float | None = None,
        eviction_grace: float = 0.05,
        name: str = "tenant",
        replicas: int = 0,
        replica_set: ReplicaFactory | None = None,
    ) -> None:
        if max_engines < 1 or sync_connections < 1:
            raise ConfigurationError(
                "An engine cache needs max_engines >= 1 and sync_connections >= 1."
            )
        replicas = replicas if replica_set is not None else 0
        per_slot = connection_budget // max_engines
        least = sync_connections + 1 + replicas
        if per_slot < least:
            raise ConfigurationError(
                f"A connection budget of {connection_budget} cannot give each of {max_engines} "
                f"tenant engines {least} connections ({sync_connections} sync, at least 1 "
                f"async{f' and 1 per replica ({replicas})' if replicas else ''}); raise it to "
                f"{max_engines * least} or lower the engine count."
            )
        # Each replica's pool gets an equal share of the async connections, at most the
        # primary's pool size; the primary's async pool keeps the rest.
        async_share = per_slot - sync_connections
        replica_max = min(settings.pool_size + settings.max_overflow, async_share // (replicas + 1))
        async_max = min(
            settings.pool_size + settings.max_overflow, async_share - replicas * replica_max
        )
        async_pool = min(settings.pool_size, async_max)
        self.resolver = resolver
        self.name = name  # the database lib's name: labels the engines' metrics
        self._cursors = cursor_factories(name, settings)
        self.max_engines = max_engines
        self.connection_budget = connection_budget
        self.per_tenant_connections = async_max + sync_connections + replicas * replica_max
        self._replica_set = replica_set
        self._replica_settings = settings.model_copy(
            update={"pool_size": max(replica_max, 1), "max_overflow": 0}
        )
        self.wait_timeout = settings.pool_timeout if wait_timeout is None else wait_timeout
        self.eviction_grace = eviction_grace
        self._async_settings = settings.model_copy(
            update={"pool_size": async_pool, "max_overflow": async_max - async_pool}
        )
        self._sync_settings = settings.model_copy(
            update={"pool_size": sync_connections, "max_overflow": 0}
        )
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
        cls, settings: TenantDatabaseSettings, resolver: TenantUrlResolver | None = None
    ) -> EngineCache:
        """A cache bounded by the settings' engine count and budget (static map by default)."""
        return cls(
            resolver or StaticTenantUrlResolver.from_settings(settings),
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
            if entry.replicas is not None:
                entry.replicas.dispose_sync(close=False)
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

    def urls(self) -> dict[str, URL]:
        """The URL each live tenant's engines connect to (a move changes it)."""
        with self._lock:
            return {slug: entry.engines.url for slug, entry in self._live.items()}

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

    @asynccontextmanager
    async def lease_with_replicas(
        self, tenant: TenantLike
    ) -> AsyncIterator[tuple[Engines, ReplicaSet | None]]:
        """``lease``, with the tenant database's replica set (None: it has no replicas)."""
        entry = await self._acquire(as_tenant(tenant).slug)
        try:
            yield entry.engines, entry.replicas
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
                entry = self._build(slug, url)
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

    def _build(self, slug: str, url: URL) -> _Entry:
        replicas: ReplicaSet | None = None
        engines: Engines | None = None
        if self._replica_set is not None:
            replicas = self._replica_set(url, self._replica_settings, lambda: primary())
            if replicas is not None:
                for replica in replicas.replicas:
                    self._watch_closes(replica.engine.sync_engine)
        engines = build_engines(
            self._async_settings,
            url,
            sync_settings=self._sync_settings,
            cursors=self._cursors,
            each_engine=self._watch_closes,
            track_writes=replicas is not None,  # read-your-writes positions
        )

        def primary() -> AsyncEngine:
            assert engines is not None
            return engines.async_engine

        return _Entry(slug, engines, replicas=replicas)

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
            if entry.replicas is not None:
                await entry.replicas.dispose()
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
        """Close the idle async connections of ``entry`` (its replicas' too) from sync code."""
        self._close_async_engine(entry, entry.engines.async_engine)
        if entry.replicas is not None:
            for replica in entry.replicas.replicas:
                replica.binds.clear()
                self._close_async_engine(entry, replica.engine)

    def _close_async_engine(self, entry: _Entry, engine: AsyncEngine) -> None:
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
        """Dispose one tenant's engines, or every tenant's (each waits for its open sessions).

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
