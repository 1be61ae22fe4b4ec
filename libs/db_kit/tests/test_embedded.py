"""The embedded development server: started once, reused across commands, stoppable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from core_db import CoreSettings
from db_kit.embedded import EmbeddedPostgres


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DB_WORKSPACE_ROOT", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("ENVIRONMENT", "development")
    yield tmp_path
    EmbeddedPostgres(tmp_path / ".data" / "postgres").destroy()


def _databases(url: str) -> set[str]:
    u = make_url(url)
    with psycopg.connect(host=u.host, port=u.port, user=u.username, dbname="postgres") as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


def test_unset_url_in_development_uses_one_reused_embedded_server(workspace: Path) -> None:
    first = CoreSettings.load().resolved_url()
    assert first.host == "127.0.0.1"
    assert first.database == "core"
    assert (workspace / ".data" / "postgres" / "pgdata" / "PG_VERSION").exists()

    # A second command (a new settings object, a new handle) reuses the running server.
    again = CoreSettings.load().resolved_url()
    assert again.port == first.port
    assert "core" in _databases(first.render_as_string(hide_password=False))


def test_relative_data_dir_stop_and_restart_keep_data(workspace: Path) -> None:
    server = EmbeddedPostgres(Path("rel") / "pg")
    port = server.start()
    assert server.running_port() == port
    url = server.ensure_database("kept")
    server.stop()
    assert server.running_port() is None
    server.start()
    assert "kept" in _databases(server.url("postgres"))
    assert make_url(url).database == "kept"
    server.destroy()
    assert not (workspace / "rel" / "pg").exists()
