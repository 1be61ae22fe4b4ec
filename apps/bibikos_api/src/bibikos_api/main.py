"""bibikos_api: the bibikos database wired into the shared modules, plus gym routes.

Run: `uv run uvicorn bibikos_api.main:app` (or `make run-bibikos`). BIBIKOS_DATABASE_URL
points it at any PostgreSQL; unset in development, the embedded server is used. With
BIBIKOS_TENANT_URLS set (one database per tenant), every request is routed by host to its
tenant's database (BIBIKOS_API_TENANT_HOSTS, e.g. {"us": ["us.gym.example"], "eu": [...]},
or BIBIKOS_API_TENANT_BASE_DOMAIN / _HEADER).
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

import bibikos_db
from api_kit import bind_database, create_api
from api_kit.routing import TenantRoutingSettings, add_tenant_routing
from auth.router import router as auth_router
from auth.webhooks import router as identity_webhook_router
from bibikos_api.gym.router import router as gym_router
from contact.router import router as contact_router
from db_shared import Database, TenantDirectory
from notifications.router import router as notifications_router
from payments.router import router as payments_router

DESCRIPTION = "bibikos_api: bibikos database wired into the shared modules, plus gym routes."


class BibikosApiRouting(TenantRoutingSettings):
    model_config = SettingsConfigDict(env_prefix="BIBIKOS_API_", extra="ignore")


def default_database() -> Database:
    """One database per tenant when BIBIKOS_TENANT_URLS is set, else the single database."""
    settings = bibikos_db.CONFIG.settings()
    if getattr(settings, "tenant_urls", None):
        return bibikos_db.tenant_database
    return bibikos_db.database


def create_app(
    database: Database | None = None, routing: TenantRoutingSettings | None = None
) -> FastAPI:
    """The app, bound to ``database`` (default: see ``default_database``)."""
    db = database if database is not None else default_database()
    app = create_api(
        name="bibikos_api",
        description=DESCRIPTION,
        binders=[bind_database(db)],
        routers=[
            auth_router,
            identity_webhook_router,
            notifications_router,
            payments_router,
            contact_router,
            gym_router,
        ],
    )
    if isinstance(db, TenantDirectory) and db.multi_tenant:
        add_tenant_routing(app, db, routing or BibikosApiRouting())
    return app


app = create_app()
