"""How the toolkit finds the core database's settings, models and migrations."""

from __future__ import annotations

from core_db.settings import CoreSettings
from db_kit.config import DatabaseConfig, SchemaTenancy

REGISTRY = DatabaseConfig(
    name="core registry",
    settings_class=CoreSettings,
    models="core_db.registry.models",
    migrations="core_db.registry.migrations",
    version_table_schema="core",
    schemas=("core",),
    description="The core schema of the core database: tenants, plugins, super admins.",
)

CONFIG = DatabaseConfig(
    name="core",
    settings_class=CoreSettings,
    models="core_db.models",
    migrations="core_db.migrations",
    seed="core_db.seed:seed",
    description="my_api's database: `DATABASE_URL`.",
    tenancy=SchemaTenancy(registry=REGISTRY, registry_model="core_db.registry.models:Tenant"),
)
