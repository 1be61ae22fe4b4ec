"""One engine per database per process: reused across app construction, fresh after fork."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import URL

import core_db
from db_kit.database import SQLAlchemyDatabase
from db_tools.testing import reset_engines, url_string


def backend_pid(db: SQLAlchemyDatabase) -> int:
    with db.sync_session() as s:
        return int(s.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_repeated_app_construction_reuses_the_process_database() -> None:
    from bibikos_api.main import create_app as create_bibikos
    from my_api.main import create_app as create_my_api

    first = core_db.database.engines
    for _ in range(3):
        create_my_api()
        create_bibikos()
    assert core_db.database.engines is first  # no new engine, no new pool
    core_db.database.dispose_sync()


def test_a_forked_child_never_reuses_the_parents_connections(
    database_at_head: Callable[..., URL],
) -> None:
    db = SQLAlchemyDatabase(core_db.CONFIG, url=database_at_head(core_db.CONFIG))
    parent_pid = backend_pid(db)
    parent_engines = db.engines
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read)
            fresh = db._engines is None
            pid = backend_pid(db)
            os.write(write, f"{int(fresh)} {pid}".encode())
            db.dispose_sync()
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(child, 0)
    fresh, child_pid = os.read(read, 100).decode().split()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert fresh == "1"
    assert int(child_pid) != parent_pid  # the child opened its own connection
    # The parent's pooled connection survived the child: same engine, same backend.
    assert db.engines is parent_engines
    assert backend_pid(db) == parent_pid
    db.dispose_sync()


SCRIPT = """
import asyncio, gc, os, warnings
warnings.simplefilter("always")
from sqlalchemy import text
import core_db
from db_kit.database import dispose_all

async def use() -> None:
    async with core_db.database.session() as s:
        assert (await s.execute(text("SELECT 1"))).scalar_one() == 1

asyncio.run(use())
asyncio.run(use())  # a second event loop, as scripts and tests do
if os.environ.get("DISPOSE") == "1":
    print("disposed", asyncio.run(dispose_all()))
gc.collect()
print("done")
"""


def run_script(url: URL, dispose: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url_string(url), "DISPOSE": "1" if dispose else ""}
    return subprocess.run(
        [sys.executable, "-X", "dev", "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_script_that_disposes_ends_without_warnings(
    database_at_head: Callable[..., URL],
) -> None:
    """-X dev shows ResourceWarnings and asyncio's complaints; an explicit dispose leaves none."""
    url = database_at_head(core_db.CONFIG)
    clean = run_script(url, dispose=True)
    assert clean.returncode == 0, clean.stderr
    assert "done" in clean.stdout
    assert "disposed" in clean.stdout
    noise = [
        line
        for line in clean.stderr.splitlines()
        if "Warning" in line or "Event loop is closed" in line or "Exception ignored" in line
    ]
    assert not noise, clean.stderr
    # The check can fail: without the dispose, psycopg reports the abandoned connection.
    sloppy = run_script(url, dispose=False)
    assert sloppy.returncode == 0, sloppy.stderr
    assert "ResourceWarning" in sloppy.stderr


def test_lifespan_shutdown_disposes_the_engines(database_at_head: Callable[..., URL]) -> None:
    import httpx

    from my_api.main import create_app

    db = SQLAlchemyDatabase(core_db.CONFIG, url=database_at_head(core_db.CONFIG))
    for _ in range(2):  # the same database across two app lifetimes, as tests do
        app = create_app(db)
        with TestClient(app) as client:
            assert client.get("/health/ready").status_code == 200
            engines = db._engines
            assert engines is not None
            assert engines.async_engine.pool.checkedin() >= 1  # type: ignore[attr-defined]
        assert db._engines is None  # lifespan end disposed them
        assert isinstance(client, httpx.Client)


def test_reset_engines_disposes_every_database(database_at_head: Callable[..., URL]) -> None:
    db = SQLAlchemyDatabase(core_db.CONFIG, url=database_at_head(core_db.CONFIG))
    backend_pid(db)
    assert db._engines is not None
    assert reset_engines() >= 1
    assert db._engines is None
    backend_pid(db)  # usable again: engines are built on next use
    db.dispose_sync()
