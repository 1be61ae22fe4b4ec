"""bibikos_api: the bibikos database wired into the shared modules, plus gym routes.

Run: `uv run uvicorn bibikos_api.main:create_app --factory` (or `make run-bibikos`). With
BIBIKOS_DB_MULTI_TENANT=true tenants also come from the control registry, and the
super-admin API (``/admin``, ``Authorization: Bearer sa_...``) manages them.
BIBIKOS_DATABASE_URL points it at any PostgreSQL (`make run-bibikos` starts the embedded
one in development and sets it). With one database per tenant (BIBIKOS_TENANT_URLS set, or
BIBIKOS_DB_MULTI_TENANT=true for tenants registered in the control schema), every request
is routed by host to its tenant's database: the registry's domains, BIBIKOS_API_TENANT_HOSTS
(e.g. {"us": ["us.gym.example"], "eu": [...]}), BIBIKOS_API_TENANT_BASE_DOMAIN / _HEADER.

Importing this module builds nothing and reads no settings: ``create_app`` does, when the
server (or a test) calls it.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

import bibikos_db
from api_kit import TenantRoutingSettings, bind_database, create_api, tenant_routing
from api_kit.admin import TenantAdministration, admin_router
from auth.router import router as auth_router
from auth.webhooks import router as identity_webhook_router
from bibikos_api.gym.router import router as gym_router
from contact.router import router as contact_router
from db_kit.engine import configure_sql_logging
from db_kit.settings import DatabaseSettings
from db_kit.tenancy.admin import TenantAdmin
from db_kit.tenancy.routed import TenantRoutedDatabase
from db_shared import Database, TenantDirectory
from notifications.router import router as notifications_router
from payments.router import router as payments_router

DESCRIPTION = "bibikos_api: bibikos database wired into the shared modules, plus gym routes."


class BibikosApiRouting(TenantRoutingSettings):
    model_config = SettingsConfigDict(env_prefix="BIBIKOS_API_", extra="ignore")


def default_database() -> Database:
    """One database per tenant when BIBIKOS_TENANT_URLS is set or BIBIKOS_DB_MULTI_TENANT
    is true (tenants from the control registry, and the static map), else the single one."""
    settings = bibikos_db.CONFIG.settings()
    if getattr(settings, "tenant_urls", None) or settings.multi_tenant:
        return bibikos_db.tenant_database
    return bibikos_db.database


def create_app(
    database: Database | None = None, routing: TenantRoutingSettings | None = None
) -> FastAPI:
    """The app, bound to ``database`` (default: see ``default_database``).

    Reads the database's settings (a missing BIBIKOS_DATABASE_URL outside development stops
    here, naming the variable) and, for a multi-tenant database, the routing settings.
    """
    db = database if database is not None else default_database()
    settings = getattr(db, "settings", None)
    if isinstance(settings, DatabaseSettings):
        configure_sql_logging(settings)  # SQL log level by environment, set by the entry point
    tenancy = None
    if isinstance(db, TenantDirectory) and db.multi_tenant:
        tenancy = tenant_routing(db, routing or BibikosApiRouting())
    routers = [
        auth_router,
        identity_webhook_router,
        notifications_router,
        payments_router,
        contact_router,
        gym_router,
    ]
    if isinstance(db, TenantRoutedDatabase) and db.uses_registry:
        control = db.control

        def tenant_admin(actor: str) -> TenantAdministration:
            # The registry lives in the control database (schema control).
            return TenantAdmin(bibikos_db.CONFIG, actor=actor, engine=control.engines.sync_engine)

        routers.append(admin_router(tenant_admin))
    return create_api(
        name="bibikos_api",
        description=DESCRIPTION,
        binders=[bind_database(db)],
        routers=routers,
        tenancy=tenancy,
    )


__all__ = ["DESCRIPTION", "BibikosApiRouting", "create_app", "default_database"]
