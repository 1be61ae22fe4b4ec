"""Answers from a tenant registry, cached per process and forgotten on every change.

``RegistryLookup`` answers "which tenant is this slug, and is it active?" and "which
tenant does this host name?" from a registry (the kit's mixins, ``db_kit.tenancy.registry``).
Every registry table NOTIFYs ``db_kit_registry`` on change; a background task per lookup
LISTENs on its own connection and empties the cache on any notification, so a suspended
tenant is refused by every worker process within milliseconds.

The cache is only trusted while that listener is connected and listening: before it is,
after its connection drops, and in a forked child until the child's own listener is up,
every lookup queries the registry. While listening, entries also age out after ``ttl``
seconds, in case a notification is lost: an answer past its TTL is given once more while
it is read again in the background (a busy tenant never waits on the registry), and is
gone after twice the TTL. Unknown slugs and hosts are cached too, in a
bounded LRU, so probing random hosts cannot grow memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import ColumnElement, Row, Select, inspect, select
from sqlalchemy.engine import URL

from db_kit.engine import Engines
from db_kit.errors import first_line, sqlstate, translate, translating
from db_kit.tenancy.registry import (
    REGISTRY_CHANNEL,
    TenantDatabaseRegistryMixin,
    TenantDomainMixin,
    TenantRecordMixin,
    TenantRegistryMixin,
    TenantStatus,
)
from db_shared.errors import ConfigurationError, DatabaseError
from db_shared.tenancy import TenantSuspendedError

__all__ = [
    "REGISTRY_CACHE_SIZE",
    "REGISTRY_TTL",
    "RegistryLookup",
    "TenantEntry",
    "domain_model_of",
    "served",
]

log = logging.getLogger(__name__)

# Seconds a cached answer is trusted while the listener is up (notifications may be lost).
REGISTRY_TTL = 5.0
# Answers (tenants and hosts, found or not) kept per lookup; the least recently used go first.
REGISTRY_CACHE_SIZE = 10_000
# The listener reconnects after this many seconds, doubling up to the second figure.
RECONNECT_DELAY = (0.5, 10.0)
# An idle listener checks its connection this often (seconds).
LISTENER_KEEPALIVE = 30.0
# SQLSTATE of a missing table: the registry was never migrated.
UNDEFINED_TABLE = "42P01"
# Longest host name a domain row can hold (RFC 1035; the registry's CHECK).
MAX_HOST = 253

Translator = Callable[[BaseException], DatabaseError | None]


@dataclass(frozen=True)
class TenantEntry:
    """A registry row as routing needs it; ``location`` is its schema or database name,
    ``server`` the server holding it (None: the home server) and ``placement_version``
    grows with every move."""

    slug: str
    status: TenantStatus
    location: str
    server: str | None = None
    placement_version: int = 1


def served(slug: str, entry: TenantEntry | None) -> bool:
    """Whether a tenant with this registry row is served: ACTIVE yes; missing or still
    PROVISIONING no; SUSPENDED raises ``TenantSuspendedError`` (a 403, not an unknown)."""
    if entry is None or entry.status is TenantStatus.PROVISIONING:
        return False
    if entry.status is TenantStatus.SUSPENDED:
        raise TenantSuspendedError(slug)
    return True


def domain_model_of(tenant_model: type[TenantRecordMixin]) -> type[TenantDomainMixin] | None:
    """The mapped class composing ``TenantDomainMixin`` beside ``tenant_model``; None if none."""
    found = [
        mapper.class_
        for mapper in inspect(tenant_model).registry.mappers
        if issubclass(mapper.class_, TenantDomainMixin)
    ]
    if len(found) > 1:
        names = ", ".join(sorted(cls.__name__ for cls in found))
        raise LookupError(f"the registry of {tenant_model.__name__} maps several domains: {names}")
    return found[0] if found else None


def _location_of(model: type[TenantRecordMixin]) -> Any:
    if issubclass(model, TenantRegistryMixin):
        return model.schema_name
    if issubclass(model, TenantDatabaseRegistryMixin):
        return model.database_name
    raise TypeError(
        f"{model.__name__} composes neither TenantRegistryMixin nor TenantDatabaseRegistryMixin"
    )


_MISSING = object()


@dataclass
class _Cached:
    value: Any
    expires: float


class RegistryLookup:
    """Cached answers from one registry; ``aclose()`` stops its listener.

    ``engines`` gives the registry database's engines (called on each query, so a disposed
    database builds new ones); ``listen_url`` the URL the listener connects to (default:
    those engines' URL). ``translate`` maps driver errors (default: the kit's translation),
    so an unreachable registry raises ``DatabaseUnavailableError``.
    """

    def __init__(
        self,
        tenant_model: type[TenantRecordMixin],
        engines: Callable[[], Engines],
        *,
        listen_url: Callable[[], URL | None] | None = None,
        translator: Translator | None = None,
        connect_timeout: float = 5.0,
        application_name: str = "data-layer",
        ttl: float = REGISTRY_TTL,
        max_entries: int = REGISTRY_CACHE_SIZE,
        keepalive: float = LISTENER_KEEPALIVE,
    ) -> None:
        self.tenant_model = tenant_model
        self.domain_model = domain_model_of(tenant_model)
        self._location = _location_of(tenant_model)
        self._engines = engines
        self._listen_url = listen_url
        self._translator = translator
        self.connect_timeout = connect_timeout
        self.application_name = application_name
        self.ttl = ttl
        self.max_entries = max_entries
        self.keepalive = keepalive
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], _Cached] = OrderedDict()
        # Keys read again in the background (answers past their TTL), and those tasks.
        self._refreshing: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Bumped whenever the cache is emptied: an answer read before then is not stored.
        self._generation = 0
        self._pid = os.getpid()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listening = False
        self._subscribers: list[Callable[[], None]] = []
        # How many times a listener of this process started listening (tests, logs).
        self.connections = 0

    # public answers ----------------------------------------------------------------------

    def cached_tenant(self, slug: str) -> TenantEntry | None:
        """The cached registry row of ``slug`` when one is cached (no query, no await);
        None otherwise (then ask ``tenant``). The same object until the answer changes."""
        found = self._cached(("tenant", slug))
        return found if isinstance(found, TenantEntry) else None

    async def tenant(self, slug: str) -> TenantEntry | None:
        """The registry row of ``slug`` (any status); None when there is none."""
        key = ("tenant", slug)
        found = self._cached(key)
        if isinstance(found, TenantEntry) or found is None:
            return found
        generation = self._begin()
        row = await self._first(self._tenant_query(slug))
        entry = None if row is None else self._entry(row)
        self._store(key, entry, generation)
        return entry

    async def tenant_for_host(self, host: str) -> str | None:
        """The slug of the tenant a domain row names for ``host`` (lower-cased, no port)."""
        host = host.strip().lower().removesuffix(".")
        if self.domain_model is None or not host or len(host) > MAX_HOST:
            return None
        key = ("host", host)
        found = self._cached(key)
        if isinstance(found, str) or found is None:
            return found
        generation = self._begin()
        row = await self._first(self._host_query(host))
        slug = None if row is None else str(row[0])
        self._store(key, slug, generation)
        return slug

    async def tenants(self, slugs: Iterable[str]) -> dict[str, TenantEntry]:
        """The registry rows of ``slugs`` that exist, read now (never cached)."""
        wanted = sorted(set(slugs))
        if not wanted:
            return {}
        t = self.tenant_model
        stmt = select(t.slug, t.status, self._location, t.server, t.placement_version).where(
            t.slug.in_(wanted)
        )
        with translating(self._translate):
            async with self._engines().async_engine.connect() as conn:
                rows = (await conn.execute(stmt)).all()
        return {entry.slug: entry for entry in map(self._entry, rows)}

    def tenant_sync(self, slug: str) -> TenantEntry | None:
        """``tenant`` from sync code (scripts, sync sessions): always read now."""
        with translating(self._translate), self._engines().sync_engine.connect() as conn:
            row = conn.execute(self._tenant_query(slug)).first()
        return None if row is None else self._entry(row)

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (on the listener's event loop) after each registry change."""
        self._subscribers.append(callback)

    @property
    def listening(self) -> bool:
        """Whether this process's listener is connected and listening (answers are cached)."""
        loop = self._loop
        return (
            self._listening
            and self._pid == os.getpid()
            and loop is not None
            and not loop.is_closed()
            and loop.is_running()
        )

    async def tenant_now(self, slug: str) -> TenantEntry | None:
        """``tenant`` read from the registry now, the cached answer replaced: a session that
        found its tenant gone from the server it was routed to asks this."""
        with self._lock:
            self._cache.pop(("tenant", slug), None)
        return await self.tenant(slug)

    def forget(self) -> None:
        """Empty the cache (a notification does this)."""
        with self._lock:
            self._generation += 1
            self._cache.clear()

    # queries -----------------------------------------------------------------------------

    def _translate(self, exc: BaseException) -> DatabaseError | None:
        if sqlstate(exc) == UNDEFINED_TABLE:
            table = getattr(self.tenant_model, "__table__", None)
            return ConfigurationError(
                f"The tenant registry ({table}) does not exist in its database: migrate it "
                "(`db <name> registry migrate`) before routing tenants by it."
            )
        if self._translator is not None:
            return self._translator(exc)
        return translate(exc)

    def _tenant_query(self, slug: str) -> Select[Any]:
        t = self.tenant_model
        return select(t.slug, t.status, self._location, t.server, t.placement_version).where(
            t.slug == slug
        )

    def _host_query(self, host: str) -> Select[Any]:
        t, d = self.tenant_model, self.domain_model
        assert d is not None
        on: ColumnElement[bool] = d.tenant_id == t.id
        return select(t.slug).join(d, on).where(d.domain == host)

    @staticmethod
    def _entry(row: Any) -> TenantEntry:
        return TenantEntry(
            slug=row[0],
            status=TenantStatus(row[1]),
            location=row[2],
            server=row[3],
            placement_version=row[4],
        )

    async def _first(self, stmt: Select[Any]) -> Row[Any] | None:
        with translating(self._translate):
            async with self._engines().async_engine.connect() as conn:
                row: Row[Any] | None = (await conn.execute(stmt)).first()
        return row

    # the cache -----------------------------------------------------------------------------

    def _cached(self, key: tuple[str, str]) -> Any:
        """The cached answer, or ``_MISSING``. An answer past its TTL (while the listener
        is up: no change was announced) is still given for one more TTL, and read again in
        the background meanwhile, so a busy tenant never waits on the registry; past that
        it is gone."""
        if not self.listening:
            return _MISSING
        with self._lock:
            found = self._cache.get(key)
            if found is None:
                return _MISSING
            now = time.monotonic()
            if found.expires <= now:
                if found.expires + self.ttl <= now:
                    del self._cache[key]
                    return _MISSING
                self._refresh_soon(key)
            self._cache.move_to_end(key)
            return found.value

    def _refresh_soon(self, key: tuple[str, str]) -> None:
        """Read ``key``'s answer again in a background task (under the cache's lock). Every
        tenant answer expiring within half a TTL goes with it, in one query, so a process
        serving many tenants re-reads the registry a few times per TTL, not once per tenant."""
        if key in self._refreshing:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        keys = {key}
        if key[0] == "tenant":
            horizon = time.monotonic() + self.ttl / 2
            keys.update(
                k
                for k, cached in self._cache.items()
                if k[0] == "tenant" and cached.expires <= horizon and k not in self._refreshing
            )
        self._refreshing.update(keys)
        task = loop.create_task(self._refresh(keys))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self, keys: set[tuple[str, str]]) -> None:
        try:
            generation = self._generation
            slugs = sorted(value for kind, value in keys if kind == "tenant")
            if slugs:
                rows = await self.tenants(slugs)
                for slug in slugs:
                    self._store(("tenant", slug), rows.get(slug), generation)
            for kind, value in keys:
                if kind == "host":
                    row = await self._first(self._host_query(value))
                    self._store((kind, value), None if row is None else str(row[0]), generation)
        except Exception as exc:  # the entries expire for good; the next lookup queries
            log.debug("could not refresh %d registry answers: %s", len(keys), exc)
        finally:
            self._refreshing.difference_update(keys)

    def _begin(self) -> int | None:
        """Start the listener if needed; the generation to store under, None: do not store."""
        self._ensure_listener()
        return self._generation if self.listening else None

    def _store(self, key: tuple[str, str], value: Any, generation: int | None) -> None:
        if generation is None or not self.listening:
            return
        with self._lock:
            # A change announced while the query ran may have made ``value`` stale.
            if generation != self._generation:
                return
            old = self._cache.get(key)
            if old is not None and old.value == value:
                value = old.value  # the same object: routes built on it stay valid
            self._cache[key] = _Cached(value, time.monotonic() + self.ttl)
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)

    # the listener --------------------------------------------------------------------------

    def _ensure_listener(self) -> None:
        loop = asyncio.get_running_loop()
        if self._pid != os.getpid():
            self._after_fork()
        task, owner = self._task, self._loop
        alive = task is not None and not task.done()
        if alive and (owner is loop or (owner is not None and owner.is_running())):
            return  # listening for this process (maybe from another thread's loop)
        self._listening = False
        self._loop = loop
        self._task = loop.create_task(self._listen_forever(), name="db_kit registry listener")

    def _after_fork(self) -> None:
        """In a forked child: the parent's listener, loop and answers are not ours."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._refreshing = set()
        self._tasks = set()
        self._task = None
        self._loop = None
        self._listening = False
        self.forget()

    def _target(self) -> URL:
        url = self._listen_url() if self._listen_url is not None else None
        return url if url is not None else self._engines().url

    async def _listen_forever(self) -> None:
        delay = RECONNECT_DELAY[0]
        while True:
            target = self._target()
            before = self.connections
            try:
                await self._listen(target)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                shown = target.render_as_string(hide_password=True)
                log.warning(
                    "registry listener on %s stopped (%s); answers are read uncached until it "
                    "is back, retrying in %.1f s",
                    shown,
                    first_line(exc),
                    delay,
                )
            finally:
                if self._task is asyncio.current_task():  # not replaced by aclose() and a restart
                    self._listening = False
                self.forget()
            if self.connections != before:
                delay = RECONNECT_DELAY[0]  # it was up: a fresh drop, not a failing server
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_DELAY[1])

    async def _listen(self, target: URL) -> None:
        conninfo = target.set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncio.wait_for(
            psycopg.AsyncConnection.connect(
                conninfo,
                autocommit=True,
                connect_timeout=max(1, int(self.connect_timeout)),
                application_name=f"{self.application_name} registry listener",
            ),
            self.connect_timeout + 1,
        )
        async with conn:
            await conn.execute(f"LISTEN {REGISTRY_CHANNEL}")
            self.forget()  # anything read before LISTEN may already be stale
            self._listening = self._task is asyncio.current_task()
            self.connections += 1
            log.debug("registry listener up (backend %s)", conn.info.backend_pid)
            while True:
                # Notifications that arrive during the keep-alive query wait for this call.
                async for notify in conn.notifies(timeout=self.keepalive):
                    self._notified(notify)
                # Quiet for a while: make sure the connection still answers.
                await asyncio.wait_for(conn.execute("SELECT 1"), self.connect_timeout)

    def _notified(self, notify: psycopg.Notify) -> None:
        self.forget()
        for callback in list(self._subscribers):
            try:
                callback()
            except Exception:
                log.exception("a registry change subscriber failed")

    # lifecycle -------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the listener and empty the cache; the next lookup starts it again."""
        task, loop = self._task, self._loop
        self._task, self._loop, self._listening = None, None, False
        self.forget()
        if task is None or task.done() or self._pid != os.getpid():
            return
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if loop is here:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif loop is not None and loop.is_running():
            loop.call_soon_threadsafe(task.cancel)

    def close(self) -> None:
        """``aclose`` from sync code: the listener is cancelled on its own loop."""
        task, loop = self._task, self._loop
        self._task, self._loop, self._listening = None, None, False
        self.forget()
        if task is None or task.done() or loop is None or self._pid != os.getpid():
            return
        with contextlib.suppress(RuntimeError):  # its loop has closed: the task went with it
            loop.call_soon_threadsafe(task.cancel)

    def __repr__(self) -> str:
        state = "listening" if self.listening else "not listening"
        return f"RegistryLookup({self.tenant_model.__name__}, {state}, {len(self._cache)} cached)"
