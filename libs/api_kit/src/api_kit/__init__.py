"""FastAPI glue shared by feature modules and apps (no engines, no db libs, no features).

``create_api`` builds an app from binders (svcs), routers and optional tenant routing;
``DatabaseDep`` gives routes the bound ``Database``; ``response_for`` is the one mapping
of ``db_shared`` database errors and domain refusals to HTTP (an RFC 9457 ``Problem``);
``problems(401, 429)`` is route metadata for errors only an operation's code knows.
"""

from api_kit.app import Binder, bind_database, create_api
from api_kit.contract import problems
from api_kit.deps import DatabaseDep, IdPath, get_database, uses_database
from api_kit.errors import install_error_handlers, response_for
from api_kit.routing import TenantRoutingSettings, tenant_routing
from api_kit.tenancy import (
    CallableResolver,
    CurrentTenantDep,
    DefaultResolver,
    FirstMatch,
    HeaderResolver,
    HostMapResolver,
    RegistryDomainResolver,
    SubdomainResolver,
    TenantMiddleware,
    TenantResolver,
    TenantRouting,
    get_current_tenant,
    tenant_exempt,
)
from api_kit.types import MAX_ID, AwareDatetime, StrictId, StrictInt4, StrictInt8

__all__ = [
    "MAX_ID",
    "AwareDatetime",
    "Binder",
    "CallableResolver",
    "CurrentTenantDep",
    "DatabaseDep",
    "DefaultResolver",
    "FirstMatch",
    "HeaderResolver",
    "HostMapResolver",
    "IdPath",
    "RegistryDomainResolver",
    "StrictId",
    "StrictInt4",
    "StrictInt8",
    "SubdomainResolver",
    "TenantMiddleware",
    "TenantResolver",
    "TenantRouting",
    "TenantRoutingSettings",
    "bind_database",
    "create_api",
    "get_current_tenant",
    "get_database",
    "install_error_handlers",
    "problems",
    "response_for",
    "tenant_exempt",
    "tenant_routing",
    "uses_database",
]
