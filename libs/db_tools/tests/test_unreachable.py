"""The ``db`` CLI against a database it cannot reach: one clear line, exit code 1, quickly.

Two real failures, no mocks: a closed port (connection refused at once) and a "black hole"
(a socket that completes the TCP handshake but never answers, so only the connect timeout
ends the wait). Either way the output names host:port, never the password, never a
traceback.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from core_db import CONFIG
from db_tools.cli import build_app
from db_tools.testing import PostgresServer

PASSWORD = "s3cretpw"
CONNECT_TIMEOUT = 2
COMMANDS = [["core", "status"], ["core", "deploy"]]


@pytest.fixture
def core_settings_reset(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Settings are cached per process: forget them before and after the test."""
    monkeypatch.setenv("ENVIRONMENT", "test")
    monkeypatch.setenv("CORE_DB_CONNECT_TIMEOUT", str(CONNECT_TIMEOUT))
    CONFIG.reset()
    yield monkeypatch
    # monkeypatch restores the environment after this fixture's teardown; the next reader
    # of CONFIG.settings() reloads from the restored environment.
    CONFIG.reset()


@pytest.fixture
def black_hole_port() -> Iterator[int]:
    """A listening port whose connections are queued by the kernel and never answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        port: int = sock.getsockname()[1]
        yield port


def run_cli(args: list[str], port: int, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, float]:
    """Invoke ``db ARGS`` against 127.0.0.1:PORT; returns (exit code, all output, seconds)."""
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/app")
    CONFIG.reset()
    app = build_app()
    started = time.monotonic()
    result = CliRunner().invoke(app, args)
    elapsed = time.monotonic() - started
    # Recent Typer/Click mix stderr into `output` and also expose `stderr`; older Click
    # raises ValueError on `stderr` unless the runner separates the streams.
    try:
        stderr = result.stderr
    except ValueError:
        stderr = ""
    text = result.output if stderr in result.output else result.output + stderr
    # Exit code 1 must come from the CLI's own error handling (typer.Exit -> SystemExit),
    # not from CliRunner catching an unexpected exception.
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"unexpected {result.exception!r}; output:\n{text}"
    )
    return result.exit_code, text, elapsed


def assert_clear_unavailable(exit_code: int, output: str, port: int) -> None:
    assert exit_code == 1, output
    assert f"127.0.0.1:{port}" in output
    assert "error:" in output
    assert PASSWORD not in output
    assert "Traceback" not in output


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_closed_port(
    core_settings_reset: pytest.MonkeyPatch, closed_port: int, args: list[str]
) -> None:
    exit_code, output, elapsed = run_cli(args, closed_port, core_settings_reset)
    assert_clear_unavailable(exit_code, output, closed_port)
    assert "Cannot reach PostgreSQL" in output
    assert "refused" in output.lower()
    assert elapsed < CONNECT_TIMEOUT + 5


@pytest.mark.slow
@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_black_hole_gives_up_after_the_connect_timeout(
    core_settings_reset: pytest.MonkeyPatch, black_hole_port: int, args: list[str]
) -> None:
    exit_code, output, elapsed = run_cli(args, black_hole_port, core_settings_reset)
    assert_clear_unavailable(exit_code, output, black_hole_port)
    assert CONFIG.settings().connect_timeout == CONNECT_TIMEOUT
    assert "timeout" in output.lower()
    assert elapsed < CONNECT_TIMEOUT + 5, f"took {elapsed:.1f}s"
    # It did wait for the timeout rather than failing for another reason.
    assert elapsed >= CONNECT_TIMEOUT - 0.5, f"gave up after {elapsed:.1f}s"


def test_missing_database_is_named_not_called_unreachable(
    core_settings_reset: pytest.MonkeyPatch, postgres_server: PostgresServer
) -> None:
    """The server answers but has no such database: say so (libpq gives no SQLSTATE)."""
    url = postgres_server.admin_url.set(database="no_such_db_here", password=PASSWORD)
    core_settings_reset.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    CONFIG.reset()
    result = CliRunner().invoke(build_app(), ["core", "status"])
    assert result.exit_code == 1, result.output
    assert "has no database 'no_such_db_here'" in result.output, result.output
    assert "Cannot reach" not in result.output
    assert PASSWORD not in result.output
    assert "Traceback" not in result.output
