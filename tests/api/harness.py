"""Test harness: a real uvicorn per app on 127.0.0.1 and helpers to act as users."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from db_kit.config import DatabaseConfig
from db_kit.database import SQLAlchemyDatabase


class LiveServer:
    """uvicorn serving ``app`` in a thread; stops when the test ends."""

    def __init__(self, app: FastAPI) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def create(app_name: str, database: SQLAlchemyDatabase) -> FastAPI:
    if app_name == "my_api":
        from my_api.main import create_app
    else:
        from bibikos_api.main import create_app
    return create_app(database)


@dataclass
class Api:
    """One running app on its own fresh database, with helpers to act as users."""

    name: str
    config: DatabaseConfig
    db_url: URL
    base_url: str
    client: httpx.Client
    tokens: dict[str, str] = field(default_factory=dict)

    def sql(self, statement: str, **params: Any) -> list[Any]:
        engine = create_engine(self.db_url)
        try:
            with engine.begin() as conn:
                result = conn.execute(text(statement), params)
                return list(result) if result.returns_rows else []
        finally:
            engine.dispose()

    def register(
        self, email: str | None = None, password: str = "correct horse 1"
    ) -> dict[str, Any]:
        email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
        r = self.client.post("/auth/register", json={"email": email, "password": password})
        assert r.status_code == 201, r.text
        r2 = self.client.post("/auth/login", json={"email": email, "password": password})
        assert r2.status_code == 200, r2.text
        user: dict[str, Any] = r.json()
        user["token"] = r2.json()["access_token"]
        user["headers"] = {"Authorization": f"Bearer {user['token']}"}
        return user

    def admin(self) -> dict[str, Any]:
        """A registered user holding the admin role (granted in SQL, as an operator would)."""
        user = self.register()
        self.sql("INSERT INTO roles (name) VALUES ('admin') ON CONFLICT (name) DO NOTHING")
        self.sql(
            "INSERT INTO user_roles (user_id, role_id) SELECT :u, id FROM roles WHERE name = 'admin'",
            u=user["id"],
        )
        return user
