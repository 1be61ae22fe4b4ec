"""Tenancy at run time: one module per concern.

* ``schemas``: schema-per-tenant layout (``SchemaTenancy``) and routing of sessions to a
  tenant's schema;
* ``url_resolvers``: database-per-tenant settings and slug -> URL resolvers;
* ``engine_cache``: the bounded LRU of tenant engines;
* ``routed``: ``TenantRoutedDatabase``, the Database of "the current tenant".

Provisioning and migrating tenants is ``db_kit.migrations``' business.
"""

from db_kit.tenancy.engine_cache import CacheStats, EngineCache, TenantDatabaseUnavailableError
from db_kit.tenancy.routed import TenantRoutedDatabase
from db_kit.tenancy.url_resolvers import (
    CallableTenantUrlResolver,
    StaticTenantUrlResolver,
    TenantDatabaseSettings,
    TenantUrlResolver,
    TenantUrls,
    tenant_url,
    tenant_urls_field,
)

__all__ = [
    "CacheStats",
    "CallableTenantUrlResolver",
    "EngineCache",
    "StaticTenantUrlResolver",
    "TenantDatabaseSettings",
    "TenantDatabaseUnavailableError",
    "TenantRoutedDatabase",
    "TenantUrlResolver",
    "TenantUrls",
    "tenant_url",
    "tenant_urls_field",
]
