"""The core database library: settings (`DATABASE_URL`), models, migrations, the Database.

``database`` is the process-wide ``Database``; its engines are created on first use.
"""

from core_db.config import CONFIG
from core_db.settings import CoreSettings
from db_kit.database import SQLAlchemyDatabase

database = SQLAlchemyDatabase(CONFIG)

__all__ = ["CONFIG", "CoreSettings", "database"]
