"""How the toolkit finds the bibikos database's settings, models and migrations.

The same models and migrations serve the main database (`BIBIKOS_DATABASE_URL`) and every
tenant database (registered in the `control` schema, or listed in `BIBIKOS_TENANT_URLS`;
`db bibikos tenants ...`).
"""

from __future__ import annotations

from bibikos_db.settings import BibikosSettings
from db_kit.config import DatabaseConfig, DatabaseTenancy

REGISTRY = DatabaseConfig(
    name="bibikos registry",
    settings_class=BibikosSettings,
    models="bibikos_db.registry.models",
    migrations="bibikos_db.registry.migrations",
    version_table_schema="control",
    schemas=("control",),
    description=(
        "The control schema of the bibikos database: tenants and their databases, domains, "
        "plugins, super admins, audit."
    ),
)

CONFIG = DatabaseConfig(
    name="bibikos",
    settings_class=BibikosSettings,
    models="bibikos_db.models",
    migrations="bibikos_db.migrations",
    seed="bibikos_db.seed:seed",
    description=(
        "bibikos_api's database (gym): `BIBIKOS_DATABASE_URL`; one database per tenant, "
        "registered in its control schema (`db bibikos tenants create`) or listed in "
        "`BIBIKOS_TENANT_URLS`."
    ),
    database_tenancy=DatabaseTenancy(
        registry=REGISTRY, registry_model="bibikos_db.registry.models:Tenant"
    ),
)
