"""The ``Database`` every db lib exports: lazy engines, units of work, translated errors."""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from db_kit.config import DatabaseConfig
from db_kit.engine import WROTE, Engines, build_engines
from db_kit.errors import (
    TENANT_GONE_SQLSTATES,
    ConstraintColumns,
    sqlstate,
    translate,
    translating,
)
from db_kit.fleet import SERVER_UP, ServerEngines
from db_kit.replicas import ReplicaSet, ReplicaState
from db_kit.settings import DatabaseSettings, ServerSettings, same_target
from db_kit.tenancy.lookup import RegistryLookup, TenantEntry, served
from db_kit.tenancy.registry import TenantStatus
from db_kit.tenancy.schemas import TENANT_BIND_CACHE, SchemaRouter
from db_shared.errors import DatabaseError
from db_shared.positions import note_write, parse_lsn, required_position
from db_shared.tenancy import TenantMovedError, UnknownTenantError, current_tenant

T = TypeVar("T")


class SQLAlchemyDatabase:
    """Implements ``db_shared.Database`` for one configured PostgreSQL database.

    Engines are created on first use, once per instance; ``dispose()`` closes them and the
    next use creates them again.
    """

    # Instances that own their engines are disposed by dispose_all and reset after fork.
    _tracked = True
    # Whether the settings' replicas (<PREFIX>SERVERS) serve this database's read sessions.
    _uses_replicas = True

    def __init__(
        self,
        config: DatabaseConfig,
        *,
        settings: DatabaseSettings | None = None,
        url: URL | str | None = None,
        multi_tenant: bool | None = None,
    ) -> None:
        self.config = config
        self._settings = settings
        self._url = url
        self._engines: Engines | None = None
        self._lock = threading.Lock()
        self._models: dict[type, type] = {}
        self._columns: ConstraintColumns | None = None
        self._multi_tenant = multi_tenant
        # Schema-per-tenant routing (db_kit.tenancy.schemas), when the config has tenancy.
        self._router = (
            SchemaRouter(config.tenancy, lambda: self.engines)
            if config.tenancy is not None
            else None
        )
        self._lookup: RegistryLookup | None = None
        self._server: ServerSettings | bool | None = False  # False: not looked at yet
        self._replicas: ReplicaSet | None = None
        # Schema-per-tenant tenants on several servers (<PREFIX>SERVERS): engines per server,
        # and each tenant's last route (reused while its registry answer is unchanged).
        self._fleet: ServerEngines | bool | None = False  # False: not looked at yet
        self._routes: dict[str, _Route] = {}
        if self._tracked:
            _live_databases.add(self)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def settings(self) -> DatabaseSettings:
        return self._settings if self._settings is not None else self.config.settings()

    @property
    def engines(self) -> Engines:
        engines = self._engines
        if engines is None:
            with self._lock:
                if self._engines is None:
                    from sqlalchemy.engine import make_url

                    url = make_url(self._url) if isinstance(self._url, str) else self._url
                    # Schema-per-tenant: no server-side prepares (see engine.connect_args).
                    fleet = self.fleet
                    self._engines = build_engines(
                        fleet.settings if fleet is not None else self.settings,
                        url,
                        prepare=not self.multi_tenant,
                        name=self.name,
                        track_writes=self.replica_server is not None,
                    )
                engines = self._engines
        return engines

    # the fleet -----------------------------------------------------------------------

    @property
    def fleet(self) -> ServerEngines | None:
        """Engines per server when this schema-per-tenant database routes tenants across
        several servers (``<PREFIX>SERVERS``); None with one server (or not multi-tenant,
        or given its own URL)."""
        fleet = self._fleet
        if fleet is False:
            found: ServerEngines | None = None
            settings = self.settings
            if self._url is None and self.multi_tenant and self._router is not None:
                servers = settings.fleet()
                home = settings.home_server()
                if len(servers) > 1 and home is not None:
                    found = ServerEngines(
                        settings,
                        name=self.name,
                        home=home,
                        home_engines=lambda: self.engines,
                        home_replicas=lambda: self.replicas,
                        prepare=False,
                    )
            fleet = self._fleet = found
        assert fleet is not True
        return fleet

    async def _placement(self, slug: str, *, fresh: bool = False) -> TenantEntry:
        """The registry row of ``slug`` (cached; ``fresh``: read now); an unknown or not
        yet provisioned tenant raises ``UnknownTenantError``, a suspended one
        ``TenantSuspendedError``: a session never guesses a server."""
        lookup = self.registry_lookup
        assert lookup is not None  # a fleet is schema-per-tenant
        entry = await (lookup.tenant_now(slug) if fresh else lookup.tenant(slug))
        if entry is None or not served(slug, entry):
            raise UnknownTenantError(slug)
        return entry

    def _placement_sync(self, slug: str) -> TenantEntry:
        lookup = self.registry_lookup
        assert lookup is not None
        entry = lookup.tenant_sync(slug)
        if entry is None or not served(slug, entry):
            raise UnknownTenantError(slug)
        return entry

    async def _fleet_route(self, fleet: ServerEngines) -> _Route:
        """Where the current tenant's unit of work runs: its server's engines, viewed
        with its schema. Reused while the registry's cached answer is the same object."""
        slug = current_tenant().slug
        lookup = self._lookup
        if lookup is not None:
            entry = lookup.cached_tenant(slug)
            if entry is not None:
                route = self._routes.get(slug)
                if route is not None and route.entry is entry:
                    return route
        with translating(self.translate):
            entry = await self._placement(slug)
        router = self._router
        assert router is not None
        engines = fleet.engines(entry.server)
        route = _Route(entry, engines, router.binds_on(slug, entry.server or fleet.home, engines))
        if entry.status is TenantStatus.ACTIVE:
            self._routes[slug] = route
            if len(self._routes) > TENANT_BIND_CACHE:
                self._routes.pop(next(iter(self._routes)))
        return route

    async def _moved(self, route: _Route, exc: BaseException) -> TenantMovedError | None:
        """After a failure with a tenant-gone SQLSTATE: the placement read again; a
        ``TenantMovedError`` when it changed (the unit of work may run again, elsewhere)."""
        if sqlstate(exc) not in TENANT_GONE_SQLSTATES:
            return None
        before = route.entry
        try:
            after = await self._placement(before.slug, fresh=True)
        except DatabaseError as gone:
            return TenantMovedError(before.slug, f"its placement is gone: {gone}")
        if (after.server, after.placement_version, after.location) == (
            before.server,
            before.placement_version,
            before.location,
        ):
            return None
        fleet = self.fleet
        home = fleet.home if fleet is not None else None
        return TenantMovedError(
            before.slug,
            f"server {before.server or home} (placement {before.placement_version}), now "
            f"{after.server or home} (placement {after.placement_version})",
        )

    # replicas ------------------------------------------------------------------------

    @property
    def replica_server(self) -> ServerSettings | None:
        """The server whose replicas serve read sessions; None without replicas.

        The settings' (only) server, when it has replicas and this database runs on its
        primary (a database given another URL, e.g. a tenant's, reads from its primary).
        """
        server = self._server
        if server is False:
            found, replicas = self.settings.replica_urls() if self._uses_replicas else (None, ())
            if found is not None and replicas and self._url is not None:
                from sqlalchemy.engine import make_url

                url = make_url(self._url) if isinstance(self._url, str) else self._url
                if not same_target(url, found.primary):
                    found = None
            server = self._server = found if replicas else None
        assert server is not True
        return server

    @property
    def replicas(self) -> ReplicaSet | None:
        """The replica set, built on first use; None without replicas."""
        replicas = self._replicas
        if replicas is None:
            server = self.replica_server
            if server is None:
                return None
            with self._lock:
                if self._replicas is None:
                    self._replicas = ReplicaSet(
                        server,
                        self.settings,
                        database=self.name,
                        primary=lambda: self.engines.async_engine,
                        prepare=not self.multi_tenant,
                    )
                replicas = self._replicas
        return replicas

    async def replica_states(self) -> list[ReplicaState]:
        """Each replica's state and replay lag, sampled now (every server's, with a fleet)."""
        fleet = self.fleet
        if fleet is not None:
            found: list[ReplicaState] = []
            for replica_set in fleet.all_replicas():
                found.extend(await replica_set.states())
            return found
        replicas = self.replicas
        return [] if replicas is None else await replicas.states()

    async def replica_health(self) -> dict[str, tuple[str, float | None]]:
        """``db_shared.ReplicaHealth``: replica name -> (state, lag in ms)."""
        return {s.name: (s.state, s.lag_ms) for s in await self.replica_states()}

    # errors --------------------------------------------------------------------------

    def translate(self, exc: BaseException) -> DatabaseError | None:
        """The ``db_shared`` error for a driver error raised against this database."""
        if self._columns is None:
            self._columns = ConstraintColumns(self.config.metadata)
        url = self._engines.url if self._engines is not None else None
        return translate(exc, columns=self._columns, url=url)

    # tenancy -------------------------------------------------------------------------

    @property
    def multi_tenant(self) -> bool:
        """Whether sessions are routed to the current tenant's schema."""
        if self._multi_tenant is not None:
            return self._multi_tenant
        return self.config.tenancy is not None and self.settings.multi_tenant

    def _current_binds(self) -> tuple[AsyncEngine, Engine] | None:
        """The current tenant's translated engines (None when not multi-tenant).

        Raises ``TenantRequiredError`` rather than ever falling back to another schema.
        """
        if self._router is None or not self.multi_tenant:
            return None
        return self._router.binds()

    @property
    def registry_lookup(self) -> RegistryLookup | None:
        """Cached answers from this database's tenant registry (schema-per-tenant only)."""
        lookup = self._lookup
        if lookup is None and self.config.tenancy is not None:
            with self._lock:
                if self._lookup is None:
                    settings = self.settings
                    self._lookup = RegistryLookup(
                        self.config.tenancy.model,
                        lambda: self.engines,
                        listen_url=settings.registry_listen_target,
                        translator=self.translate,
                        connect_timeout=float(settings.connect_timeout),
                        application_name=settings.application_name,
                    )
                lookup = self._lookup
        return lookup

    async def tenant_exists(self, slug: str) -> bool:
        """Whether ``slug`` is an active tenant in the registry.

        A suspended tenant raises ``TenantSuspendedError``; a missing or still provisioning
        one is False. Answers are cached only while this process hears the registry's
        change notifications (``db_kit.tenancy.lookup``), so a change is seen at once.
        """
        registry = self.registry_lookup
        if registry is None:
            return False
        return served(slug, await registry.tenant(slug))

    async def tenant_for_host(self, host: str) -> str | None:
        """The slug of the tenant the registry's ``tenant_domains`` names for ``host``."""
        registry = self.registry_lookup
        if registry is None:
            return None
        return await registry.tenant_for_host(host)

    # units of work -------------------------------------------------------------------

    def session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """Async unit of work: commit on success, rollback on error, errors translated.

        With replicas, a unit of work that wrote records the primary's WAL position after
        its commit (``db_shared.positions``), so later reads of this context see it.
        """
        return _AsyncUnitOfWork(self)

    def read_session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A read-only unit of work: on a replica within the lag bound that has replayed
        what this context must see, else on the primary (see ``db_kit.replicas``)."""
        return _ReadUnitOfWork(self)

    def _schema(self) -> str | None:
        """The current tenant's schema (schema-per-tenant), for replica engine views."""
        if self._router is None or not self.multi_tenant:
            return None
        return self._router.tenancy.schema_for(current_tenant().slug)

    @contextmanager
    def sync_session(self) -> Iterator[Session]:
        fleet = self.fleet
        if fleet is not None:
            slug = current_tenant().slug
            with translating(self.translate):
                entry = self._placement_sync(slug)
            assert self._router is not None
            engines = fleet.engines(entry.server)
            binds: tuple[AsyncEngine, Engine] | None = self._router.binds_on(
                slug, entry.server or fleet.home, engines
            )
        else:
            engines = self.engines
            binds = self._current_binds()
        with translating(self.translate):
            bind = binds[1] if binds else engines.sync_engine
            with engines.sync_sessions(bind=bind) as session:
                try:
                    yield session
                    session.commit()
                except BaseException:
                    session.rollback()
                    raise

    # models --------------------------------------------------------------------------

    def model(self, table: type[T]) -> type[T]:
        found = self._models.get(table)
        if found is None:
            candidates = [
                m.class_ for m in self.config.base.registry.mappers if issubclass(m.class_, table)
            ]
            if len(candidates) != 1:
                raise LookupError(
                    f"{self.name} maps {len(candidates)} classes built from {table.__name__}; "
                    f"compose it exactly once in {self.config.models}."
                )
            found = candidates[0]
            self._models[table] = found
        return found

    # health and lifecycle ------------------------------------------------------------

    async def ping(self) -> None:
        with translating(self.translate):
            async with self.engines.async_engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

    async def ping_tenants(self, timeout: float | None = None) -> dict[str, str | None]:
        """Readiness: ping the database (raising when it is down), then, schema-per-tenant,
        each active tenant: None when it can serve, else why not (its last migration
        failed, its schema is missing, its server does not answer). One registry query,
        then one catalog query per server (at once, each within ``timeout``, default the
        connect timeout)."""
        await self.ping()
        router = self._router
        if router is None or not self.multi_tenant:
            return {}
        stmt, present = router.health_queries()
        with translating(self.translate):
            async with self.engines.async_engine.connect() as conn:
                rows = (await conn.execute(stmt)).all()
        fleet = self.fleet
        home = fleet.home if fleet is not None else None
        placed: dict[str | None, list[Any]] = {}
        for row in rows:
            server = (row.server or home) if fleet is not None else None
            placed.setdefault(server, []).append(row)
        limit = timeout if timeout is not None else float(self.settings.connect_timeout)

        async def schemas_on(server: str | None, schemas: list[str]) -> set[str] | str:
            try:
                engines = self.engines if fleet is None else fleet.engines(server)
                async with asyncio.timeout(limit):
                    with translating(self.translate):
                        async with engines.async_engine.connect() as conn:
                            found = await conn.execute(present, {"schemas": schemas})
                            return {name for (name,) in found}
            except TimeoutError:
                return f"server {server} gave no answer within {limit:g} s"
            except DatabaseError as exc:
                if server is None:
                    raise
                return f"server {server} is unavailable: {exc}"

        servers = list(placed)
        answers = await asyncio.gather(
            *(schemas_on(s, [row.schema_name for row in placed[s]]) for s in servers)
        )
        health: dict[str, str | None] = {}
        for server, answer in zip(servers, answers, strict=True):
            for slug, schema, error, _ in placed[server]:
                if isinstance(answer, str):
                    health[slug] = answer
                elif schema not in answer:
                    health[slug] = f"schema {schema} is missing"
                elif error:
                    health[slug] = f"its last migration failed: {error}"
                else:
                    health[slug] = None
        return health

    async def server_health(self, timeout: float | None = None) -> dict[str, str | None]:
        """``db_shared.ServerHealth``: with a fleet, each server -> None when its primary
        answers ``SELECT 1`` within ``timeout`` (default: the connect timeout), else why."""
        fleet = self.fleet
        if fleet is None:
            return {}
        limit = timeout if timeout is not None else float(self.settings.connect_timeout)

        async def one(server: str) -> str | None:
            try:
                async with asyncio.timeout(limit):
                    with translating(self.translate):
                        async with fleet.engines(server).async_engine.connect() as conn:
                            await conn.execute(text("SELECT 1"))
            except TimeoutError:
                return f"no answer within {limit:g} s"
            except DatabaseError as exc:
                return str(exc)
            return None

        names = list(fleet.servers)
        found = dict(zip(names, await asyncio.gather(*map(one, names)), strict=True))
        for server, reason in found.items():
            SERVER_UP.labels(self.name, server).set(0 if reason else 1)
        return found

    def ping_sync(self) -> None:
        with translating(self.translate), self.engines.sync_engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def _forget_routes(self) -> None:
        self._routes = {}
        if self._router is not None:
            self._router.forget()

    def _take_fleet(self) -> ServerEngines | None:
        fleet, self._fleet = self._fleet, False
        return fleet if isinstance(fleet, ServerEngines) else None

    async def dispose(self) -> None:
        if self._lookup is not None:
            await self._lookup.aclose()
        with self._lock:
            engines, self._engines = self._engines, None
            replicas, self._replicas = self._replicas, None
            fleet = self._take_fleet()
            self._forget_routes()
        if fleet is not None:
            await fleet.dispose()
        if replicas is not None:
            await replicas.dispose()
        if engines is not None:
            await engines.async_engine.dispose()
            engines.sync_engine.dispose()

    def dispose_sync(self) -> None:
        """Dispose from synchronous code (scripts); async connections are dropped unclosed."""
        if self._lookup is not None:
            self._lookup.close()
        with self._lock:
            engines, self._engines = self._engines, None
            replicas, self._replicas = self._replicas, None
            fleet = self._take_fleet()
            self._forget_routes()
        if fleet is not None:
            fleet.dispose_sync()
        if replicas is not None:
            replicas.dispose_sync(close=False)
        if engines is not None:
            engines.sync_engine.dispose()
            engines.async_engine.sync_engine.dispose(close=False)

    def _after_fork_in_child(self) -> None:
        """Forget the parent's engines without closing them: their sockets are the parent's.

        Pre-fork servers (gunicorn with uvicorn workers) then open fresh connections per
        worker on first use, and the parent's pooled connections stay intact.
        """
        self._lock = threading.Lock()
        engines, self._engines = self._engines, None
        replicas, self._replicas = self._replicas, None
        fleet = self._take_fleet()
        self._forget_routes()
        if fleet is not None:
            fleet.dispose_sync(close=False)
        if replicas is not None:
            replicas.dispose_sync(close=False)
        if engines is not None:
            engines.sync_engine.dispose(close=False)
            engines.async_engine.sync_engine.dispose(close=False)

    def __repr__(self) -> str:
        return f"SQLAlchemyDatabase({self.name})"


class _Route:
    """Where one tenant's unit of work runs in a fleet: the registry row it was routed by,
    its server's engines and their views in the tenant's schema."""

    __slots__ = ("binds", "engines", "entry")

    def __init__(
        self, entry: TenantEntry, engines: Engines, binds: tuple[AsyncEngine, Engine]
    ) -> None:
        self.entry = entry
        self.engines = engines
        self.binds = binds


class _AsyncUnitOfWork:
    """``SQLAlchemyDatabase.session()``: a plain class, not ``@asynccontextmanager``.

    Units of work are the hot path of every request; a generator-based manager cost a few
    microseconds more per unit (bench/tenancy_sessions.py).
    """

    __slots__ = ("_database", "_positions", "_route", "_session")

    def __init__(self, database: SQLAlchemyDatabase) -> None:
        self._database = database
        self._session: AsyncSession | None = None
        self._route: _Route | None = None
        self._positions = False

    async def __aenter__(self) -> AsyncSession:
        database = self._database
        fleet = database._fleet
        if fleet is False:
            fleet = database.fleet
        if fleet is None:
            binds = database._current_binds()  # TenantRequiredError before any connection
            engines = database.engines
            bind = binds[0] if binds else engines.async_engine
            self._positions = bool(database._server)  # has replicas (decided with engines)
        else:
            assert isinstance(fleet, ServerEngines)
            route = self._route = await database._fleet_route(fleet)
            engines, bind = route.engines, route.binds[0]
            self._positions = engines.tracks_writes
        session = engines.async_sessions(bind=bind)
        self._session = session
        return await session.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = self._session
        assert session is not None, "unit of work exited before it was entered"
        self._session = None
        try:
            try:
                if exc is None:
                    await session.commit()
                    if self._positions:
                        await _note_position(session)
                else:
                    await session.rollback()
            finally:
                await session.__aexit__(exc_type, exc, tb)  # closes (shielded from cancel)
        except Exception as failure:
            await _raise_translated(self._database, self._route, failure)
            raise
        if isinstance(exc, Exception):
            await _raise_translated(self._database, self._route, exc)


_POSITION = text("SELECT pg_current_wal_lsn()::text")


async def _note_position(session: AsyncSession) -> None:
    """After a commit that wrote: where the primary's WAL is now, for read-your-writes."""
    if session.sync_session.info.get(WROTE):
        position = parse_lsn((await session.execute(_POSITION)).scalar_one())
        if position is not None:
            note_write(position)


class _ReadUnitOfWork:
    """``SQLAlchemyDatabase.read_session()``: a read-only transaction on a replica that may
    serve this context, else on the primary. The connection is taken at entry, so a
    replica that fails to connect is skipped, never an error."""

    __slots__ = ("_connection", "_database", "_route", "_session")

    def __init__(self, database: SQLAlchemyDatabase) -> None:
        self._database = database
        self._session: AsyncSession | None = None
        self._connection: AsyncConnection | None = None
        self._route: _Route | None = None

    async def __aenter__(self) -> AsyncSession:
        database = self._database
        fleet = database.fleet
        if fleet is None:
            binds = database._current_binds()  # TenantRequiredError before any connection
            engines = database.engines
            bind = binds[0] if binds else engines.async_engine
            replicas = database.replicas
        else:
            route = self._route = await database._fleet_route(fleet)
            engines, bind = route.engines, route.binds[0]
            replicas = fleet.replicas(route.entry.server)
        connection: AsyncConnection | None = None
        if replicas is not None:
            connection = await replicas.connect(required_position(), database._schema())
        if connection is None:  # the primary (a replica's transactions are read-only)
            with translating(database.translate):
                connection = await bind.connect()
                try:
                    # BEGIN READ ONLY: psycopg reads it at the next BEGIN (no round trip);
                    # the pool resets it when the connection goes back.
                    await connection.execution_options(postgresql_readonly=True)
                except BaseException:
                    await connection.close()
                    raise
            if replicas is not None:
                replicas.served_by_primary()
        self._connection = connection
        session = engines.async_sessions(bind=connection)
        self._session = session
        return await session.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, connection = self._session, self._connection
        assert session is not None, "read unit of work exited before it was entered"
        assert connection is not None
        self._session = self._connection = None
        try:
            try:
                try:
                    if exc is None:
                        await session.commit()
                    else:
                        await session.rollback()
                finally:
                    await session.__aexit__(exc_type, exc, tb)
            finally:
                await connection.close()
        except Exception as failure:
            await _raise_translated(self._database, self._route, failure)
            raise
        if isinstance(exc, Exception):
            await _raise_translated(self._database, self._route, exc)


async def _raise_translated(
    database: SQLAlchemyDatabase, route: _Route | None, exc: Exception
) -> None:
    """Raise ``exc`` as its ``db_shared`` error: ``TenantMovedError`` when a fleet route's
    tenant was found moved (``SQLAlchemyDatabase._moved``), else its translation."""
    if route is not None:
        moved = await database._moved(route, exc)
        if moved is not None:
            raise moved from exc
    mapped = database.translate(exc)
    if mapped is not None and mapped is not exc:
        raise mapped from exc


_live_databases: weakref.WeakSet[SQLAlchemyDatabase] = weakref.WeakSet()
# Every other Database of this process with engines to close (TenantRoutedDatabase, ...).
_other_databases: weakref.WeakSet[Any] = weakref.WeakSet()


def track(database: Any) -> None:
    """Let ``dispose_all`` reach ``database`` (it must have ``dispose()``/``dispose_sync()``)."""
    _other_databases.add(database)


def _everything() -> list[Any]:
    return [*_live_databases, *_other_databases]


async def dispose_all() -> int:
    """Dispose the engines of every database of this process (workers, scripts, tests).

    Returns how many databases were disposed; each builds its engines again on next use.
    """
    found = _everything()
    for database in found:
        await database.dispose()
    return len(found)


def dispose_all_sync() -> int:
    """``dispose_all`` from synchronous code (no event loop running)."""
    found = _everything()
    for database in found:
        database.dispose_sync()
    return len(found)


def _forget_engines_after_fork() -> None:
    for database in list(_live_databases):
        database._after_fork_in_child()


# One hook for every instance: register_at_fork cannot unregister, instances come and go.
os.register_at_fork(after_in_child=_forget_engines_after_fork)
