"""Settings of the bibikos database: `BIBIKOS_DATABASE_URL` plus `BIBIKOS_DB_*` pool options."""

from __future__ import annotations

from typing import ClassVar

from db_kit.settings import DatabaseSettings, settings_config, url_field


class BibikosSettings(DatabaseSettings):
    model_config = settings_config(env_prefix="BIBIKOS_DB_")

    url_variable: ClassVar[str] = "BIBIKOS_DATABASE_URL"
    embedded_database: ClassVar[str] = "bibikos"

    url: str | None = url_field("BIBIKOS_DATABASE_URL")
