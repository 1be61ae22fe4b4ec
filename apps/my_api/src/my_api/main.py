"""my_api: the core database wired into auth, notifications, payments and contact.

Run: `uv run uvicorn my_api.main:create_app --factory` (or `make run`). Set DATABASE_URL to
use any PostgreSQL (`make run` starts the embedded one in development and sets it). With
CORE_DB_MULTI_TENANT=true every request is routed to its tenant's schema by
MY_API_TENANT_BASE_DOMAIN / MY_API_TENANT_HOSTS / MY_API_TENANT_HEADER, and the super-admin
API (``/admin``, no tenant needed, ``Authorization: Bearer sa_...``) manages the tenants.

Importing this module builds nothing and reads no settings: ``create_app`` does, when the
server (or a test) calls it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

import core_db
from api_kit import TenantRoutingSettings, bind_database, create_api, tenant_routing
from auth.router import router as auth_router
from auth.webhooks import router as identity_webhook_router
from contact.router import router as contact_router
from db_kit.database import SQLAlchemyDatabase
from db_kit.engine import configure_sql_logging
from notifications.router import router as notifications_router
from payments.router import router as payments_router

if TYPE_CHECKING:
    from api_kit.admin import TenantAdministration

DESCRIPTION = "my_api: core database wired into auth, notifications, payments and contact."


class MyApiRouting(TenantRoutingSettings):
    model_config = SettingsConfigDict(env_prefix="MY_API_", extra="ignore")


def create_app(
    database: SQLAlchemyDatabase | None = None, routing: TenantRoutingSettings | None = None
) -> FastAPI:
    """The app, bound to ``database`` (default: the process-wide core_db.database).

    Reads the database's settings (a missing DATABASE_URL outside development stops here,
    naming the variable) and, for a multi-tenant database, the routing settings.
    """
    db = database if database is not None else core_db.database
    configure_sql_logging(db.settings)  # SQL log level by environment, set by the entry point
    tenancy = tenant_routing(db, routing or MyApiRouting()) if db.multi_tenant else None
    routers = [
        auth_router,
        identity_webhook_router,
        notifications_router,
        payments_router,
        contact_router,
    ]
    if db.multi_tenant:
        # Imported here: single-tenant processes never load the super-admin API (~30 ms).
        from api_kit.admin import admin_router
        from db_kit.tenancy.admin import TenantAdmin

        def tenant_admin(actor: str) -> TenantAdministration:
            # The registry lives in the database the app serves (schema core).
            return TenantAdmin(db.config, actor=actor, engine=db.engines.sync_engine)

        routers.append(admin_router(tenant_admin))
    return create_api(
        name="my_api",
        description=DESCRIPTION,
        binders=[bind_database(db)],
        routers=routers,
        tenancy=tenancy,
    )


__all__ = ["DESCRIPTION", "MyApiRouting", "create_app"]
