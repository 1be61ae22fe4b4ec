"""The embedded development server: started once, reused across commands, stoppable, and
always on the same port for its data folder."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL, make_url

from core_db import CoreSettings
from db_shared import ConfigurationError
from db_tools.embedded import EmbeddedPostgres


@pytest.fixture
def workspace(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # Not under pytest's basetemp: as root the server runs as another user and needs to
    # traverse the folders above its data, and a concurrent pytest run makes
    # /tmp/pytest-of-root private again (mode 0700) while the server runs.
    root = Path(tempfile.mkdtemp(prefix="db_kit_embedded_"))
    monkeypatch.chdir(root)
    monkeypatch.setenv("DB_WORKSPACE_ROOT", str(root))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("ENVIRONMENT", "development")
    try:
        yield root
    finally:
        for pgdata in list(root.rglob("pgdata")):
            EmbeddedPostgres(pgdata.parent).destroy()
        shutil.rmtree(root, ignore_errors=True)


def _databases(url: str) -> set[str]:
    u = make_url(url)
    with psycopg.connect(host=u.host, port=u.port, user=u.username, dbname="postgres") as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


def _provided() -> URL:
    import core_db
    from db_tools.dev import provide_url

    core_db.CONFIG.reset()
    try:
        url = provide_url(core_db.CONFIG)
    finally:
        os.environ.pop("DATABASE_URL", None)
        core_db.CONFIG.reset()
    assert url is not None
    return url


def test_unset_url_in_development_uses_one_reused_embedded_server(workspace: Path) -> None:
    first = _provided()
    assert first.host == "127.0.0.1"
    assert first.database == "core"
    assert (workspace / ".data" / "postgres" / "pgdata" / "PG_VERSION").exists()

    # A second command (a new settings object, a new handle) reuses the running server.
    again = _provided()
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


# --- a stable port per data folder (issue 9, point 8) ------------------------------------


def test_a_restarted_server_listens_on_the_same_port(workspace: Path) -> None:
    server = EmbeddedPostgres(workspace / "pg")
    port = server.start()
    assert server.saved_port() == port
    assert server.port_file.read_text().strip() == str(port)
    server.stop()
    assert server.running_port() is None
    # Another process (a new handle) restarting it: the URL an app holds is still right.
    again = EmbeddedPostgres(workspace / "pg")
    assert again.start() == port
    assert again.url("postgres").endswith(f"@127.0.0.1:{port}/postgres")
    again.destroy()


def test_a_taken_port_is_refused_naming_the_port_and_the_file(workspace: Path) -> None:
    server = EmbeddedPostgres(workspace / "pg")
    port = server.start()
    server.stop()
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(ConfigurationError) as info:
            server.start()
        message = str(info.value)
        assert str(port) in message
        assert str(server.port_file) in message
        assert server.saved_port() == port  # never moved silently
    finally:
        squatter.close()
    assert server.start() == port
    server.destroy()


def test_status_shows_the_embedded_servers_url(workspace: Path) -> None:
    import core_db
    from db_tools.dev import describe, provide_url

    settings = CoreSettings.load()
    assert "not started yet" in describe(settings)
    with pytest.raises(ConfigurationError, match="DATABASE_URL is not set"):
        settings.resolved_url()  # the runtime never starts a server
    assert not (workspace / ".data" / "postgres" / "pgdata").exists()
    core_db.CONFIG.reset()
    try:
        url = provide_url(core_db.CONFIG)  # the tools do
    finally:
        os.environ.pop("DATABASE_URL", None)
        core_db.CONFIG.reset()
    assert url is not None
    port = url.port
    assert describe(settings) == (
        f"postgresql+psycopg://postgres@127.0.0.1:{port}/core (embedded PostgreSQL in "
        ".data/postgres)"
    )
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "db"), "core", "status"],
        cwd=workspace,
        env={**env, "ENVIRONMENT": "development", "DB_WORKSPACE_ROOT": str(workspace)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3, result.stdout + result.stderr  # 3: revisions pending
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"core at postgresql+psycopg://postgres@127.0.0.1:{port}/core"), first

    EmbeddedPostgres(workspace / ".data" / "postgres").stop()
    assert describe(settings) == (
        f"postgresql+psycopg://postgres@127.0.0.1:{port}/core (embedded PostgreSQL in "
        ".data/postgres, not running)"
    )
