"""FastAPI glue shared by feature modules and apps (no engines, no db libs)."""

from api_kit.app import bind_database, create_api
from api_kit.deps import MAX_ID, DatabaseDep, IdPath, get_database
from api_kit.errors import ProblemError, install_error_handlers, response_for
from api_kit.tenancy import (
    CallableResolver,
    CurrentTenantDep,
    FirstMatch,
    HeaderResolver,
    HostMapResolver,
    SubdomainResolver,
    TenantMiddleware,
    TenantResolver,
    get_current_tenant,
)

__all__ = [
    "MAX_ID",
    "CallableResolver",
    "CurrentTenantDep",
    "DatabaseDep",
    "FirstMatch",
    "HeaderResolver",
    "HostMapResolver",
    "IdPath",
    "ProblemError",
    "SubdomainResolver",
    "TenantMiddleware",
    "TenantResolver",
    "bind_database",
    "create_api",
    "get_current_tenant",
    "get_database",
    "install_error_handlers",
    "response_for",
]
