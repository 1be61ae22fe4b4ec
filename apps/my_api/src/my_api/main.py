"""my_api: core database wired into auth, notifications, payments and contact.

Run: `uv run uvicorn my_api.main:app` (or `make run`). Set the database URL to use any
PostgreSQL; unset in development, the embedded server is used.
"""

from __future__ import annotations

from fastapi import FastAPI

import core_db
from api_kit import bind_database, create_api
from auth.router import router as auth_router
from contact.router import router as contact_router
from db_shared import Database
from notifications.router import router as notifications_router
from payments.router import router as payments_router


def create_app(database: Database | None = None) -> FastAPI:
    """The app, bound to ``database`` (default: the process-wide core_db.database)."""
    return create_api(
        name="my_api",
        description="my_api: core database wired into auth, notifications, payments and contact.",
        binders=[bind_database(database if database is not None else core_db.database)],
        routers=[auth_router, notifications_router, payments_router, contact_router],
    )


app = create_app()
