"""Settings of the core database: `DATABASE_URL` plus `CORE_DB_*` pool options."""

from __future__ import annotations

from typing import ClassVar

from db_kit.settings import DatabaseSettings, settings_config, url_field


class CoreSettings(DatabaseSettings):
    model_config = settings_config(env_prefix="CORE_DB_")

    url_variable: ClassVar[str] = "DATABASE_URL"
    embedded_database: ClassVar[str] = "core"

    url: str | None = url_field("DATABASE_URL")
