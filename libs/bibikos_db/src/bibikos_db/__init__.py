"""The bibikos database library: settings (`BIBIKOS_DATABASE_URL`), models, migrations.

``database`` is the process-wide ``Database``; its engines are created on first use.
"""

from bibikos_db.config import CONFIG
from bibikos_db.settings import BibikosSettings
from db_kit.database import SQLAlchemyDatabase

database = SQLAlchemyDatabase(CONFIG)

__all__ = ["CONFIG", "BibikosSettings", "database"]
