"""Fixtures for the HTTP tests: each app on a fresh database, served by uvicorn.

``api`` is parametrised over both apps, so a feature test written once runs against
my_api (core_db) and bibikos_api (bibikos_db).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from harness import Api, LiveServer, create
from sqlalchemy.engine import URL

import bibikos_db
import core_db
from db_kit.database import SQLAlchemyDatabase

APPS = {"my_api": core_db.CONFIG, "bibikos_api": bibikos_db.CONFIG}


@pytest.fixture
def serve(database_at_head: Callable[..., URL]) -> Iterator[Callable[[str], Api]]:
    """Factory: start an app (by name) on a fresh migrated database."""
    stack: list[tuple[LiveServer, httpx.Client]] = []

    def start(app_name: str) -> Api:
        config = APPS[app_name]
        url = database_at_head(config)
        database = SQLAlchemyDatabase(config, url=url)
        live = LiveServer(create(app_name, database))
        base_url = live.__enter__()
        client = httpx.Client(base_url=base_url, timeout=30)
        stack.append((live, client))
        return Api(app_name, config, url, base_url, client)

    yield start
    for live, client in reversed(stack):
        client.close()
        live.__exit__()


@pytest.fixture(params=sorted(APPS))
def api(request: pytest.FixtureRequest, serve: Callable[[str], Api]) -> Api:
    """Each app in turn (the feature suite runs once per wiring)."""
    return serve(request.param)
