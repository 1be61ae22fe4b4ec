"""What every database library and app imports at run time.

* ``settings``: ``DatabaseSettings`` (one class per database, its URL variable, pool and
  migration settings) and the one URL validation;
* ``config``: ``DatabaseConfig`` / ``SchemaTenancy``: a database's settings, models,
  migrations and tenancy layout;
* ``engine``: the one engine factory; ``database``: ``SQLAlchemyDatabase`` (the
  ``db_shared.Database`` protocol) and its units of work;
* ``errors``: SQLSTATE translation into ``db_shared`` errors; ``observability``: metrics,
  the slow-query log, correlation ids;
* ``tenancy``: registry contract, URL resolvers, the engine cache, the routed database;
* ``migrations``: the shared Alembic env, timeouts and retries, shadow databases, and
  migrating one database, schema tenants and tenant databases.

Nothing here starts a server or configures logging; the tools (``db_tools``) and the
apps' entry points do. Names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from db_kit.config import DatabaseConfig, SchemaTenancy
    from db_kit.database import SQLAlchemyDatabase, dispose_all, dispose_all_sync
    from db_kit.engine import Engines, build_engines, configure_sql_logging
    from db_kit.errors import translate, translating
    from db_kit.models import new_metadata
    from db_kit.settings import DatabaseSettings, settings_config, url_field

_WHERE = {
    "DatabaseConfig": "config",
    "SchemaTenancy": "config",
    "SQLAlchemyDatabase": "database",
    "dispose_all": "database",
    "dispose_all_sync": "database",
    "Engines": "engine",
    "build_engines": "engine",
    "configure_sql_logging": "engine",
    "translate": "errors",
    "translating": "errors",
    "new_metadata": "models",
    "DatabaseSettings": "settings",
    "settings_config": "settings",
    "url_field": "settings",
}

__all__ = [
    "DatabaseConfig",
    "DatabaseSettings",
    "Engines",
    "SQLAlchemyDatabase",
    "SchemaTenancy",
    "build_engines",
    "configure_sql_logging",
    "dispose_all",
    "dispose_all_sync",
    "new_metadata",
    "settings_config",
    "translate",
    "translating",
    "url_field",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
