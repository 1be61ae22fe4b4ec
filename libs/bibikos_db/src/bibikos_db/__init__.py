"""The bibikos database library: settings (`BIBIKOS_DATABASE_URL`), models, migrations.

``database`` is the process-wide ``Database``; its engines are created on first use.
``tenant_database`` is the ``Database`` of the current tenant when each tenant has its own
database (`BIBIKOS_TENANT_URLS`): every unit of work runs on ``current_tenant()``'s
database, through a bounded engine cache built on first use.
"""

from bibikos_db.config import CONFIG
from bibikos_db.settings import BibikosSettings
from db_kit.database import SQLAlchemyDatabase
from db_kit.tenancy import TenantRoutedDatabase

database = SQLAlchemyDatabase(CONFIG)
tenant_database = TenantRoutedDatabase(CONFIG)

__all__ = ["CONFIG", "BibikosSettings", "database", "tenant_database"]
