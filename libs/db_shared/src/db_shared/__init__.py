"""Protocols, the DATABASE token and the error types shared by every database library.

Feature modules import this package and nothing else of the data layer.
"""

from db_shared.errors import (
    CheckViolationError,
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    DeadlockDetectedError,
    DuplicateEntryError,
    ForeignKeyViolationError,
    IntegrityViolationError,
    InvalidDataError,
    NotFoundError,
    NotNullViolationError,
    RetryableError,
    SerializationFailureError,
    UnboundTokenError,
)
from db_shared.protocols import (
    Database,
    ReplicaHealth,
    ServerHealth,
    TenantDirectory,
    TenantDomains,
    TenantHealth,
)
from db_shared.tenancy import (
    InvalidTenantError,
    Tenant,
    TenantFrozenError,
    TenantMovedError,
    TenantRequiredError,
    TenantSuspendedError,
    UnknownTenantError,
    as_tenant,
    current_tenant,
    current_tenant_or_none,
    tenant_bound,
    tenant_context,
    validate_tenant_slug,
    with_tenant,
)
from db_shared.token import Token
from db_shared.unit_of_work import transact

DATABASE: Token[Database] = Token(
    "DATABASE",
    Database,  # type: ignore[type-abstract]
    bind_hint=(
        "Bind the app's database at start-up, e.g. "
        "`registry.register_value(DATABASE, core_db.database)` in the FastAPI lifespan."
    ),
)

__all__ = [
    "DATABASE",
    "CheckViolationError",
    "ConfigurationError",
    "Database",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DeadlockDetectedError",
    "DuplicateEntryError",
    "ForeignKeyViolationError",
    "IntegrityViolationError",
    "InvalidDataError",
    "InvalidTenantError",
    "NotFoundError",
    "NotNullViolationError",
    "ReplicaHealth",
    "RetryableError",
    "SerializationFailureError",
    "ServerHealth",
    "Tenant",
    "TenantDirectory",
    "TenantDomains",
    "TenantFrozenError",
    "TenantHealth",
    "TenantMovedError",
    "TenantRequiredError",
    "TenantSuspendedError",
    "Token",
    "UnboundTokenError",
    "UnknownTenantError",
    "as_tenant",
    "current_tenant",
    "current_tenant_or_none",
    "tenant_bound",
    "tenant_context",
    "transact",
    "validate_tenant_slug",
    "with_tenant",
]
