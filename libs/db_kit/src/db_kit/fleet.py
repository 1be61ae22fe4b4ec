"""Engines per server of a fleet (``<PREFIX>SERVERS``), for schema-per-tenant routing.

A schema-per-tenant database whose tenants are placed on several servers keeps one set of
engines per server (never per tenant): the home server's are the database's own, the
others' are built on first use from the server's primary URL. The process's connection
budget (``pool_size`` + ``max_overflow``) is divided across the servers, so adding a
server does not multiply the connections a worker may open. Each server with replicas has
its own ``ReplicaSet``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from prometheus_client import Gauge

from db_kit.engine import Engines, build_engines
from db_kit.replicas import ReplicaSet
from db_kit.settings import DatabaseSettings, ServerSettings
from db_shared.errors import ConfigurationError

__all__ = ["SERVER_UP", "ServerEngines", "divided_settings"]

SERVER_UP = Gauge(
    "db_server_up",
    "Whether each server of a fleet answered its last health check (1) or not (0).",
    ["database", "server"],
)


def divided_settings(settings: DatabaseSettings, servers: int) -> DatabaseSettings:
    """``settings`` with the pool shared out across ``servers`` (at least one connection
    each; the overflow rounded down)."""
    if servers <= 1:
        return settings
    return settings.model_copy(
        update={
            "pool_size": max(1, math.ceil(settings.pool_size / servers)),
            "max_overflow": settings.max_overflow // servers,
        }
    )


class ServerEngines:
    """The engines and replica sets of each server of one database's fleet.

    ``home_engines`` gives the database's own engines (the home server's); every other
    server's are built lazily with ``divided_settings``. ``engines(name)`` raises
    ``ConfigurationError`` for a server the settings do not list.
    """

    def __init__(
        self,
        settings: DatabaseSettings,
        *,
        name: str,
        home: str,
        home_engines: Callable[[], Engines],
        home_replicas: Callable[[], ReplicaSet | None],
        prepare: bool,
    ) -> None:
        self.name = name
        self.home = home
        self.servers: dict[str, ServerSettings] = settings.fleet()
        self.settings = divided_settings(settings, len(self.servers))
        self._variable = settings.servers_variable
        self._home_engines = home_engines
        self._home_replicas = home_replicas
        self._prepare = prepare
        self._engines: dict[str, Engines] = {}
        self._replicas: dict[str, ReplicaSet | None] = {}
        self._lock = threading.Lock()

    def server(self, name: str | None) -> ServerSettings:
        """The settings of server ``name`` (None: the home server)."""
        found = self.servers.get(name or self.home)
        if found is None:
            raise ConfigurationError(
                f"A tenant of the {self.name} database is placed on server {name!r}, which "
                f"{self._variable} does not list (it lists {', '.join(self.servers)}): add "
                "the server to the setting, or move the tenant."
            )
        return found

    def engines(self, name: str | None) -> Engines:
        """The engines of server ``name`` (None or the home server's name: the home's)."""
        if name is None or name == self.home:
            return self._home_engines()
        engines = self._engines.get(name)
        if engines is None:
            server = self.server(name)
            with self._lock:
                engines = self._engines.get(name)
                if engines is None:
                    engines = build_engines(
                        self.settings,
                        server.primary,
                        prepare=self._prepare,
                        name=f"{self.name}:{name}",
                        track_writes=bool(server.replicas),
                    )
                    self._engines[name] = engines
        return engines

    def replicas(self, name: str | None) -> ReplicaSet | None:
        """The replica set of server ``name``; None when it has no replicas."""
        if name is None or name == self.home:
            return self._home_replicas()
        if name in self._replicas:
            return self._replicas[name]
        server = self.server(name)
        engines = self.engines(name) if server.replicas else None
        with self._lock:  # built once (creating engines does not connect)
            if name not in self._replicas:
                replicas: ReplicaSet | None = None
                if engines is not None:
                    primary = engines.async_engine
                    replicas = ReplicaSet(
                        server,
                        self.settings,
                        database=f"{self.name}:{name}",
                        primary=lambda: primary,
                        prepare=self._prepare,
                    )
                self._replicas[name] = replicas
            return self._replicas[name]

    def all_replicas(self) -> list[ReplicaSet]:
        """Every server's replica set (built now when needed): health and metrics."""
        found = [self.replicas(name) for name in self.servers]
        return [r for r in found if r is not None]

    def _take(self) -> tuple[list[Engines], list[ReplicaSet]]:
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
            replicas = [r for r in self._replicas.values() if r is not None]
            self._replicas = {}
        return engines, replicas

    async def dispose(self) -> None:
        """Dispose the other servers' engines (the home's belong to the database)."""
        engines, replicas = self._take()
        for replica_set in replicas:
            await replica_set.dispose()
        for each in engines:
            await each.async_engine.dispose()
            each.sync_engine.dispose()

    def dispose_sync(self, *, close: bool = True) -> None:
        """Dispose from sync code; ``close=False`` after fork (the sockets are the parent's)."""
        engines, replicas = self._take()
        for replica_set in replicas:
            replica_set.dispose_sync(close=False)
        for each in engines:
            each.sync_engine.dispose(close=close)
            each.async_engine.sync_engine.dispose(close=False)
