"""bibikos_api: bibikos database wired into the shared modules, plus gym routes.

Run: `uv run uvicorn bibikos_api.main:app` (or `make run`). Set the database URL to use any
PostgreSQL; unset in development, the embedded server is used.
"""

from __future__ import annotations

from fastapi import FastAPI

import bibikos_db
from api_kit import bind_database, create_api
from auth.router import router as auth_router
from auth.webhooks import router as identity_webhook_router
from bibikos_api.gym.router import router as gym_router
from contact.router import router as contact_router
from db_shared import Database
from notifications.router import router as notifications_router
from payments.router import router as payments_router


def create_app(database: Database | None = None) -> FastAPI:
    """The app, bound to ``database`` (default: the process-wide bibikos_db.database)."""
    return create_api(
        name="bibikos_api",
        description="bibikos_api: bibikos database wired into the shared modules, plus gym routes.",
        binders=[bind_database(database if database is not None else bibikos_db.database)],
        routers=[
            auth_router,
            identity_webhook_router,
            notifications_router,
            payments_router,
            contact_router,
            gym_router,
        ],
    )


app = create_app()
