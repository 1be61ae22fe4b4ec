"""The bibikos database library: settings (`BIBIKOS_DATABASE_URL`), models, migrations.

``database`` is the process-wide ``Database``; its engines are created on first use.
``tenant_database`` is the ``Database`` of the current tenant when each tenant has its own
database (`BIBIKOS_TENANT_URLS`): every unit of work runs on ``current_tenant()``'s
database, through a bounded engine cache built on first use. Both are made on first use
(importing the package for its config, as the ``db`` command does, builds neither).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from bibikos_db.config import CONFIG
from bibikos_db.settings import BibikosSettings

if TYPE_CHECKING:
    from db_kit.database import SQLAlchemyDatabase
    from db_kit.tenancy import TenantRoutedDatabase

    database: SQLAlchemyDatabase
    tenant_database: TenantRoutedDatabase

__all__ = ["CONFIG", "BibikosSettings", "database", "tenant_database"]

_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    if name not in ("database", "tenant_database"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _lock:
        if name not in globals():
            if name == "database":
                from db_kit.database import SQLAlchemyDatabase

                globals()[name] = SQLAlchemyDatabase(CONFIG)
            else:
                from db_kit.tenancy import TenantRoutedDatabase

                globals()[name] = TenantRoutedDatabase(CONFIG)
    return globals()[name]
