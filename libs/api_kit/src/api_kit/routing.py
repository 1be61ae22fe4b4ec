"""How an app maps requests to tenants, from settings (``<APP>_TENANT_*`` variables)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from api_kit.tenancy import (
    DefaultResolver,
    FirstMatch,
    HeaderResolver,
    HostMapResolver,
    RegistryDomainResolver,
    SubdomainResolver,
    TenantResolver,
    TenantRouting,
)
from db_shared import TenantDirectory
from db_shared.errors import ConfigurationError
from db_shared.protocols import TenantDomains
from db_shared.tenancy import Tenant


class TenantRoutingSettings(BaseSettings):
    """Subclass per app with its own ``env_prefix`` (``MY_API_``, ``BIBIKOS_API_``).

    Resolvers are tried in order: host map, the registry's domains (when the database has
    a registry), subdomain, header; the default answers only when none of them names a
    tenant. A header that names an unknown or malformed tenant
    (or is sent twice) is refused with 404, never served from the default.
    """

    model_config = SettingsConfigDict(env_prefix="APP_", extra="ignore")

    # {"us": ["app.example.com", "*.us.example.com"], "eu": ["app.example.eu"]}
    tenant_hosts: dict[str, list[str]] = Field(default_factory=dict)
    # The tenant of a request that no host pattern, subdomain or header names (None: 404).
    tenant_default: str | None = None
    # acme.example.com -> acme
    tenant_base_domain: str | None = None
    # Only behind a proxy that sets it: clients could otherwise choose their tenant.
    tenant_header: str | None = None

    def resolver(self, domains: TenantDomains | None = None) -> TenantResolver:
        """The resolver these settings describe, with ``domains`` (a registry's host names)
        after the host map; an error naming the variables if there is nothing to route by.

        With a registry no variable is needed: its domains may be all the routing there is.
        """
        resolvers: list[TenantResolver] = []
        if self.tenant_hosts:
            # No default here: it would answer before the subdomain and header are asked.
            resolvers.append(HostMapResolver(self.tenant_hosts))
        if domains is not None:
            resolvers.append(RegistryDomainResolver(domains))
        if self.tenant_base_domain:
            resolvers.append(SubdomainResolver(self.tenant_base_domain))
        if self.tenant_header:
            resolvers.append(HeaderResolver(self.tenant_header))
        if self.tenant_default is not None:
            resolvers.append(DefaultResolver(self.tenant_default))
        if not resolvers:
            prefix = self.model_config.get("env_prefix", "")
            raise ConfigurationError(
                "The database is multi-tenant but no tenant routing is configured: set "
                f"{prefix}TENANT_BASE_DOMAIN (e.g. example.com), {prefix}TENANT_HOSTS "
                f'(e.g. {{"us": ["app.example.com"]}}) or {prefix}TENANT_HEADER.'
            )
        return resolvers[0] if len(resolvers) == 1 else FirstMatch(*resolvers)


def tenant_routing(directory: TenantDirectory, routing: TenantRoutingSettings) -> TenantRouting:
    """Route every request to its tenant; only tenants ``directory`` knows are served.

    Pass the result to ``create_api(tenancy=...)``; routers marked ``tenant_exempt`` are
    let through without a tenant. When ``directory`` has a registry of domains
    (``db_shared.TenantDomains``) they route requests too, after the host map. A tenant the
    registry has suspended is refused with 403 ``tenant_suspended``.
    """
    domains = directory if isinstance(directory, TenantDomains) else None
    resolver = routing.resolver(domains)

    async def known(tenant: Tenant) -> bool:
        return await directory.tenant_exists(tenant.slug)

    return TenantRouting(resolver=resolver, known=known)


__all__ = ["TenantRoutingSettings", "tenant_routing"]
