"""Settings of the bibikos database: `BIBIKOS_DATABASE_URL` plus `BIBIKOS_DB_*` pool options.

Database-per-tenant: `BIBIKOS_TENANT_URLS` maps tenant slugs to their own databases, e.g.
``{"us": "postgresql://app:secret@us-db:5432/bibikos_us", "eu": "postgresql://...eu"}``;
`BIBIKOS_DB_TENANT_MAX_ENGINES` and `BIBIKOS_DB_TENANT_CONNECTION_BUDGET` bound the
engines and server connections this process keeps for them.
"""

from __future__ import annotations

from typing import ClassVar

from db_kit.settings import settings_config, url_field
from db_kit.tenancy import TenantDatabaseSettings, TenantUrls, tenant_urls_field


class BibikosSettings(TenantDatabaseSettings):
    model_config = settings_config(env_prefix="BIBIKOS_DB_")

    url_variable: ClassVar[str] = "BIBIKOS_DATABASE_URL"
    embedded_database: ClassVar[str] = "bibikos"
    tenant_urls_variable: ClassVar[str] = "BIBIKOS_TENANT_URLS"

    url: str | None = url_field("BIBIKOS_DATABASE_URL")
    tenant_urls: TenantUrls = tenant_urls_field("BIBIKOS_TENANT_URLS")
