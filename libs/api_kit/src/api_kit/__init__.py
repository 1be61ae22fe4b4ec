"""FastAPI glue shared by feature modules and apps (no engines, no db libs)."""

from api_kit.app import bind_database, create_api
from api_kit.deps import DatabaseDep, IdPath, get_database
from api_kit.errors import ProblemError, install_error_handlers, response_for
from api_kit.tenancy import (
    CallableResolver,
    CurrentTenantDep,
    DefaultResolver,
    FirstMatch,
    HeaderResolver,
    HostMapResolver,
    SubdomainResolver,
    TenantMiddleware,
    TenantResolver,
    get_current_tenant,
)
from api_kit.types import MAX_ID, AwareDatetime, StrictId, StrictInt4, StrictInt8

__all__ = [
    "MAX_ID",
    "AwareDatetime",
    "CallableResolver",
    "CurrentTenantDep",
    "DatabaseDep",
    "DefaultResolver",
    "FirstMatch",
    "HeaderResolver",
    "HostMapResolver",
    "IdPath",
    "ProblemError",
    "StrictId",
    "StrictInt4",
    "StrictInt8",
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
