"""One engine per database per process: reused across app construction, fresh after fork."""

from __future__ import annotations

import os
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.engine import URL

import core_db
from db_kit.database import SQLAlchemyDatabase


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
