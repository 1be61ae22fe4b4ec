"""Migrations in one place: the shared Alembic env (``env``), lock and statement timeouts
with retries (``locks``), shadow databases (``shadow``), one database (``migrator``),
schema tenants (``schema_tenants``) and database tenants (``database_tenants``)."""

from db_kit.migrations.database_tenants import (
    TenantDatabaseMigrator,
    TenantDatabaseResult,
    TenantDatabaseState,
)
from db_kit.migrations.locks import MigrationLockTimeoutError
from db_kit.migrations.migrator import (
    DriftError,
    Migrator,
    ProductionGuardError,
    ResetReport,
    Revision,
    RevisionFailedError,
    Status,
)
from db_kit.migrations.outcome import Outcome, TenantReport
from db_kit.migrations.schema_tenants import (
    SchemaTenantMigrator,
    TenantExistsError,
    TenantResult,
    TenantRow,
)
from db_kit.migrations.shadow import ShadowDatabaseError

__all__ = [
    "DriftError",
    "MigrationLockTimeoutError",
    "Migrator",
    "Outcome",
    "ProductionGuardError",
    "ResetReport",
    "Revision",
    "RevisionFailedError",
    "SchemaTenantMigrator",
    "ShadowDatabaseError",
    "Status",
    "TenantDatabaseMigrator",
    "TenantDatabaseResult",
    "TenantDatabaseState",
    "TenantExistsError",
    "TenantReport",
    "TenantResult",
    "TenantRow",
]
