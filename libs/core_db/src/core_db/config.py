"""How the toolkit finds the core database's settings, models and migrations."""

from __future__ import annotations

from core_db.settings import CoreSettings
from db_kit.config import DatabaseConfig

CONFIG = DatabaseConfig(
    name="core",
    settings_class=CoreSettings,
    models="core_db.models",
    migrations="core_db.migrations",
    seed="core_db.seed:seed",
    description="my_api's database: `DATABASE_URL`.",
)
