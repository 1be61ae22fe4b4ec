"""How an app maps requests to tenants, from settings (``<APP>_TENANT_*`` variables)."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.middleware import Middleware

from api_kit.observability import CorrelationIdMiddleware
from api_kit.tenancy import (
    DEFAULT_EXEMPT_PATHS,
    DefaultResolver,
    FirstMatch,
    HeaderResolver,
    HostMapResolver,
    SubdomainResolver,
    TenantMiddleware,
    TenantResolver,
)
from db_shared import TenantDirectory
from db_shared.errors import ConfigurationError
from db_shared.tenancy import Tenant


class TenantRoutingSettings(BaseSettings):
    """Subclass per app with its own ``env_prefix`` (``MY_API_``, ``BIBIKOS_API_``).

    Resolvers are tried in order: host map, subdomain, header; the default answers only
    when none of them names a tenant. A header that names an unknown or malformed tenant
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

    def resolver(self) -> TenantResolver:
        """The resolver these settings describe; an error naming the variables if none."""
        resolvers: list[TenantResolver] = []
        if self.tenant_hosts:
            # No default here: it would answer before the subdomain and header are asked.
            resolvers.append(HostMapResolver(self.tenant_hosts))
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


def add_tenant_routing(
    app: FastAPI, directory: TenantDirectory, routing: TenantRoutingSettings
) -> None:
    """Route every request to its tenant; only tenants ``directory`` knows are served."""
    resolver = routing.resolver()

    async def known(tenant: Tenant) -> bool:
        return await directory.tenant_exists(tenant.slug)

    # Inside the correlation-id middleware (if any), so tenant 404s carry a request id too.
    outer = [
        i
        for i, m in enumerate(app.user_middleware)
        if m.cls == CorrelationIdMiddleware  # type: ignore[comparison-overlap]
    ]
    app.user_middleware.insert(
        outer[0] + 1 if outer else 0,
        Middleware(
            TenantMiddleware,
            resolver=resolver,
            known=known,
            # The identity webhook names its tenant in the signed payload.
            exempt_paths=(*DEFAULT_EXEMPT_PATHS, "/auth/webhooks"),
        ),
    )
