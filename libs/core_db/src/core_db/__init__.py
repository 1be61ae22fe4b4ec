"""The core database library: settings (`DATABASE_URL`), models, migrations, the Database.

``database`` is the process-wide ``Database``, made on first use (importing the package
for its config, as the ``db`` command does, builds no engine stack); its engines are
created on first use too.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from core_db.config import CONFIG
from core_db.settings import CoreSettings

if TYPE_CHECKING:
    from db_kit.database import SQLAlchemyDatabase

    database: SQLAlchemyDatabase

__all__ = ["CONFIG", "CoreSettings", "database"]

_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    if name != "database":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _lock:
        if "database" not in globals():
            from db_kit.database import SQLAlchemyDatabase

            globals()["database"] = SQLAlchemyDatabase(CONFIG)
    return globals()["database"]
