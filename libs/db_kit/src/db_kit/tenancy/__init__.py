"""Tenancy at run time: one module per concern.

* ``registry``: the registry contract (``TenantRegistryMixin``, ``TenantStatus``) a
  schema-per-tenant db lib composes;
* ``schemas``: schema-per-tenant routing (``SchemaRouter``: the current tenant's engine
  views over one pool, and the registry queries routing needs);
* ``url_resolvers``: database-per-tenant settings and slug -> URL resolvers;
* ``engine_cache``: the bounded LRU of tenant engines;
* ``routed``: ``TenantRoutedDatabase``, the Database of "the current tenant".

``db_kit.database.SQLAlchemyDatabase`` routes through ``schemas``; provisioning and migrating tenants is ``db_kit.migrations``' business. Names are loaded
on first use, so importing one module (the registry, from ``db_kit.config``) does not
import the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from db_kit.tenancy.engine_cache import (
        CacheStats,
        EngineCache,
        TenantDatabaseUnavailableError,
    )
    from db_kit.tenancy.registry import TenantRegistryMixin, TenantStatus
    from db_kit.tenancy.routed import TenantRoutedDatabase
    from db_kit.tenancy.schemas import SchemaRouter
    from db_kit.tenancy.url_resolvers import (
        CallableTenantUrlResolver,
        StaticTenantUrlResolver,
        TenantDatabaseSettings,
        TenantUrlResolver,
        TenantUrls,
        tenant_url,
        tenant_urls_field,
    )

_WHERE = {
    "CacheStats": "engine_cache",
    "EngineCache": "engine_cache",
    "TenantDatabaseUnavailableError": "engine_cache",
    "TenantRegistryMixin": "registry",
    "TenantStatus": "registry",
    "TenantRoutedDatabase": "routed",
    "SchemaRouter": "schemas",
    "CallableTenantUrlResolver": "url_resolvers",
    "StaticTenantUrlResolver": "url_resolvers",
    "TenantDatabaseSettings": "url_resolvers",
    "TenantUrlResolver": "url_resolvers",
    "TenantUrls": "url_resolvers",
    "tenant_url": "url_resolvers",
    "tenant_urls_field": "url_resolvers",
}

__all__ = [
    "CacheStats",
    "CallableTenantUrlResolver",
    "EngineCache",
    "SchemaRouter",
    "StaticTenantUrlResolver",
    "TenantDatabaseSettings",
    "TenantDatabaseUnavailableError",
    "TenantRegistryMixin",
    "TenantRoutedDatabase",
    "TenantStatus",
    "TenantUrlResolver",
    "TenantUrls",
    "tenant_url",
    "tenant_urls_field",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
