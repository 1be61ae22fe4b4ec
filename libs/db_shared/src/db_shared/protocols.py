"""What feature modules may assume about a database, whichever db lib provides it."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Protocol, TypeVar, runtime_checkable

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

T = TypeVar("T")


@runtime_checkable
class Database(Protocol):
    """One configured database: units of work, health, lifecycle and its model classes."""

    @property
    def name(self) -> str:
        """Short name of this database, such as ``core`` or ``bibikos``."""
        ...

    def session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """Async unit of work: commits when the block succeeds, rolls back when it raises.

        Driver errors raised inside the block surface as ``db_shared.errors`` types.
        """
        ...

    def read_session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A read-only unit of work that may run on a replica.

        It sees every write this request (or job) made, and every write whose position the
        client handed in (``db_shared.positions``); otherwise it may be stale by at most the
        server's replica lag bound. Without replicas it runs on the primary. Writing in it
        fails (PostgreSQL refuses writes in a read-only transaction).
        """
        ...

    def sync_session(self) -> AbstractContextManager[Session]:
        """The same unit of work for scripts, seeds and the CLI."""
        ...

    def model(self, table: type[T]) -> type[T]:
        """The concrete mapped class this database composes from a shared table mixin."""
        ...

    async def ping(self) -> None:
        """Round-trip ``SELECT 1``; raises ``DatabaseUnavailableError`` when it cannot."""
        ...

    async def dispose(self) -> None:
        """Close every pooled connection (async and sync engines)."""
        ...


@runtime_checkable
class TenantDirectory(Protocol):
    """A database that routes to the current tenant and can say whether a tenant exists."""

    @property
    def multi_tenant(self) -> bool:
        """Whether sessions are routed to the current tenant."""
        ...

    async def tenant_exists(self, slug: str) -> bool:
        """Whether ``slug`` is a tenant this database serves."""
        ...


@runtime_checkable
class TenantDomains(Protocol):
    """A tenant directory whose registry names the host names each tenant is served at."""

    async def tenant_for_host(self, host: str) -> str | None:
        """The slug of the tenant served at ``host`` (lower-case, no port); None if none."""
        ...


@runtime_checkable
class TenantHealth(Protocol):
    """A database of several tenant databases that can ping each one (``/health/ready``)."""

    @property
    def name(self) -> str: ...

    async def ping_tenants(self, timeout: float | None = None) -> dict[str, str | None]:
        """Each tenant's slug -> None when its database answered, else the reason."""
        ...


@runtime_checkable
class ReplicaHealth(Protocol):
    """A database with read replicas that can report on each (``/health/ready``)."""

    async def replica_health(self) -> dict[str, tuple[str, float | None]]:
        """Each replica's name (never a host) -> (state, replay lag in ms or None); state is
        ``ok``, ``lagging``, ``down``, ``not_a_replica`` or ``unknown``."""
        ...


@runtime_checkable
class ServerHealth(Protocol):
    """A database whose tenants live on several servers, reporting on each primary."""

    async def server_health(self) -> dict[str, str | None]:
        """Each server's name (never a host) -> None when its primary answers, else why
        not (for the log; the HTTP answer shows only a reason class). Empty: one server."""
        ...
