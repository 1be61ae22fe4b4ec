"""How the toolkit finds the bibikos database's settings, models and migrations.

The same models and migrations serve the main database (`BIBIKOS_DATABASE_URL`) and every
tenant database (`BIBIKOS_TENANT_URLS`, `db bibikos tenants ...`).
"""

from __future__ import annotations

from bibikos_db.settings import BibikosSettings
from db_kit.config import DatabaseConfig

CONFIG = DatabaseConfig(
    name="bibikos",
    settings_class=BibikosSettings,
    models="bibikos_db.models",
    migrations="bibikos_db.migrations",
    seed="bibikos_db.seed:seed",
    description=(
        "bibikos_api's database (gym): `BIBIKOS_DATABASE_URL`; one database per tenant "
        "from `BIBIKOS_TENANT_URLS`."
    ),
)
