"""Tenancy at run time: one module per concern.

* ``registry``: the registry contract (``TenantRegistryMixin``, ``TenantStatus``, ...) a
  db lib composes, in either tenancy mode;
* ``schemas``: schema-per-tenant routing (``SchemaRouter``: the current tenant's engine
  views over one pool, and the registry queries readiness needs);
* ``lookup``: ``RegistryLookup``, cached answers from a registry (slug -> tenant, host ->
  tenant), forgotten the moment the registry NOTIFYs a change;
* ``url_resolvers``: database-per-tenant settings and slug -> URL resolvers (static map,
  registry, chain);
* ``engine_cache``: the bounded LRU of tenant engines;
* ``routed``: ``TenantRoutedDatabase``, the Database of "the current tenant".

``db_kit.database.SQLAlchemyDatabase`` routes through ``schemas`` and asks ``lookup``;
provisioning and migrating tenants is ``db_kit.migrations``' business. Names are loaded
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
    from db_kit.tenancy.lookup import RegistryLookup, TenantEntry
    from db_kit.tenancy.registry import TenantRegistryMixin, TenantStatus
    from db_kit.tenancy.routed import TenantRoutedDatabase
    from db_kit.tenancy.schemas import SchemaRouter
    from db_kit.tenancy.url_resolvers import (
        CallableTenantUrlResolver,
        ChainedTenantUrlResolver,
        RegistryTenantUrlResolver,
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
    "RegistryLookup": "lookup",
    "TenantEntry": "lookup",
    "TenantRegistryMixin": "registry",
    "TenantStatus": "registry",
    "TenantRoutedDatabase": "routed",
    "SchemaRouter": "schemas",
    "CallableTenantUrlResolver": "url_resolvers",
    "ChainedTenantUrlResolver": "url_resolvers",
    "RegistryTenantUrlResolver": "url_resolvers",
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
    "ChainedTenantUrlResolver",
    "EngineCache",
    "RegistryLookup",
    "RegistryTenantUrlResolver",
    "SchemaRouter",
    "StaticTenantUrlResolver",
    "TenantDatabaseSettings",
    "TenantDatabaseUnavailableError",
    "TenantEntry",
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
