"""Schema-per-tenant routing: each unit of work runs in the current tenant's schema.

One engine (one pool) serves every tenant. For each tenant the router keeps a view of the
engines with ``schema_translate_map={None: "<prefix><slug>"}``: statements are compiled
once, with a placeholder schema, and translated at execution, so one compiled-statement
cache serves every tenant and nothing (no ``search_path``) is left on a pooled connection.
It also holds the registry queries readiness needs; which tenant is active is
``db_kit.tenancy.lookup``'s business.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy import Engine, Select, TextClause, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from db_kit.config import SchemaTenancy
from db_kit.engine import Engines
from db_kit.tenancy.registry import TenantStatus
from db_shared.tenancy import current_tenant

__all__ = ["TENANT_BIND_CACHE", "SchemaRouter"]

# Translated engine views kept (one per tenant slug; they share the pool).
TENANT_BIND_CACHE = 10_000

Binds = tuple[AsyncEngine, Engine]


class SchemaRouter:
    """The current tenant's engine views, and the registry queries readiness needs."""

    def __init__(self, tenancy: SchemaTenancy, engines: Callable[[], Engines]) -> None:
        self.tenancy = tenancy
        self._engines = engines
        self._binds: OrderedDict[str, Binds] = OrderedDict()
        # A fleet: (server, slug) -> the server's engines and the tenant's views of them.
        self._placed: OrderedDict[tuple[str, str], tuple[Engines, Binds]] = OrderedDict()

    def binds(self) -> Binds:
        """The current tenant's translated engines.

        Raises ``TenantRequiredError`` rather than ever falling back to another schema.
        """
        slug = current_tenant().slug  # a Tenant's slug was validated when it was made
        binds = self._binds.get(slug)
        if binds is None:
            translate = {None: self.tenancy.schema_for(slug)}
            engines = self._engines()
            binds = (
                engines.async_engine.execution_options(schema_translate_map=translate),
                engines.sync_engine.execution_options(schema_translate_map=translate),
            )
            self._binds[slug] = binds
            if len(self._binds) > TENANT_BIND_CACHE:
                self._binds.popitem(last=False)
        return binds

    def binds_on(self, slug: str, server: str, engines: Engines) -> Binds:
        """Tenant ``slug``'s views of ``engines``, those of its server (a fleet)."""
        key = (server, slug)
        found = self._placed.get(key)
        if found is None or found[0] is not engines:
            translate = {None: self.tenancy.schema_for(slug)}
            binds = (
                engines.async_engine.execution_options(schema_translate_map=translate),
                engines.sync_engine.execution_options(schema_translate_map=translate),
            )
            found = self._placed[key] = (engines, binds)
            if len(self._placed) > TENANT_BIND_CACHE:
                self._placed.popitem(last=False)
        return found[1]

    def forget(self) -> None:
        """Drop every engine view (the engines were disposed, or this is a forked child)."""
        self._binds.clear()
        self._placed.clear()

    # the registry ----------------------------------------------------------------------

    def health_queries(self) -> tuple[Select[str, str, str | None, str | None], TextClause]:
        """(active tenants with their schema, last migration error and server, which of a
        list of schemas exist): what readiness asks, in two queries (one per server)."""
        t = self.tenancy.model
        tenants = select(t.slug, t.schema_name, t.last_error, t.server).where(
            t.status == TenantStatus.ACTIVE
        )
        present = text("SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = ANY(:schemas)")
        return tenants, present
