"""Safe defaults (issue 9): what happens when a deployment forgets to configure something.

* No ``ENVIRONMENT`` means production: a missing URL stops the process with an error naming
  the variable, and no database server is started (no data folder, no postgres process).
* No log carries bound parameters (password hashes, token digests, emails) in any
  environment unless ``<PREFIX>LOG_SQL_PARAMETERS`` opts in.
* The Makefile chooses development for the developer's targets only, never for deploys.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError

import core_db
from core_db import CoreSettings
from db_kit.database import SQLAlchemyDatabase
from db_kit.engine import build_engines, configure_sql_logging
from db_kit.settings import Environment
from db_shared import ConfigurationError, DuplicateEntryError
from db_tools.embedded import EmbeddedPostgres

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent

# --- 2. ENVIRONMENT unset: production -------------------------------------------------


@pytest.fixture
def bare_home(tmp_path: Path) -> Iterator[Path]:
    """An empty folder outside the repository, used as cwd and HOME; cleaned of any server
    the code under test might (wrongly) have started there."""
    home = tmp_path / "home"
    home.mkdir()
    yield home
    for pgdata in list(home.rglob("pgdata")):
        EmbeddedPostgres(pgdata.parent).destroy()


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """What a container or systemd unit gives an installed app: no ENVIRONMENT, no URL, no
    workspace root; only PATH and HOME."""
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", **extra}
    for name in ("ENVIRONMENT", "APP_ENV", "DATABASE_URL", "DB_WORKSPACE_ROOT"):
        assert name not in env
    return env


def postgres_processes_under(folder: Path) -> list[str]:
    """Command lines of live processes that mention ``folder`` (a postgres started there)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(folder) in cmdline and "postgres" in cmdline:
            found.append(cmdline)
    return found


def assert_no_server_started(home: Path) -> None:
    leftovers = [
        str(p.relative_to(home))
        for p in home.rglob("*")
        if p.name in {"postgres", "pgdata", "postmaster.pid", "PG_VERSION"}
    ]
    assert leftovers == [], f"a database server was set up under {home}: {leftovers}"
    assert postgres_processes_under(home) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        # Importing an app module builds nothing; its factory (what uvicorn --factory calls) reads the settings.
        pytest.param(
            [str(BIN / "python"), "-c", "from my_api.main import create_app; create_app()"],
            id="build-my_api",
        ),
        pytest.param(
            [str(BIN / "python"), "-c", "from bibikos_api.main import create_app; create_app()"],
            id="build-bibikos",
        ),
        pytest.param([str(BIN / "db"), "core", "status"], id="db-core-status"),
        pytest.param([str(BIN / "db"), "core", "migrate"], id="db-core-migrate"),
    ],
)
def test_no_environment_and_no_url_stops_without_starting_a_server(
    bare_home: Path, command: list[str]
) -> None:
    result = subprocess.run(
        command,
        cwd=bare_home,
        env=clean_env(bare_home),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    variable = "BIBIKOS_DATABASE_URL" if "bibikos" in command[-1] else "DATABASE_URL"
    assert f"{variable} is not set" in output, output
    assert "ENVIRONMENT=development" in output, "the message must say how to choose development"
    assert_no_server_started(bare_home)


@pytest.mark.slow
@pytest.mark.parametrize("environment", [None, "development"], ids=["unset", "development"])
def test_the_migration_entrypoint_never_starts_the_embedded_server(
    bare_home: Path, environment: str | None
) -> None:
    extra = {"ENVIRONMENT": environment} if environment else {}
    result = subprocess.run(
        [str(BIN / "python"), str(REPO / "run_migrations" / "entrypoint.py"), "core"],
        cwd=bare_home,
        env={**clean_env(bare_home), **extra},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "DATABASE_URL is not set" in result.stderr
    assert_no_server_started(bare_home)


@pytest.fixture
def no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DB_WORKSPACE_ROOT", str(tmp_path))
    for name in ("DATABASE_URL", "BIBIKOS_DATABASE_URL", "ENVIRONMENT", "APP_ENV"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_unset_environment_is_production(no_environment: Path) -> None:
    settings = CoreSettings(url="postgresql://app:s3cret-pw@db.example.com/core")
    assert settings.environment is Environment.PRODUCTION
    assert settings.is_production


@pytest.mark.parametrize("environment", [None, "production", "test", "staging-typo"])
def test_only_development_may_go_without_a_url(
    no_environment: Path, monkeypatch: pytest.MonkeyPatch, environment: str | None
) -> None:
    if environment is not None:
        monkeypatch.setenv("ENVIRONMENT", environment)
    with pytest.raises(ConfigurationError) as info:
        CoreSettings.load()
    message = str(info.value)
    if environment == "staging-typo":
        assert "ENVIRONMENT" in message  # an unknown value is an error too, never development
    else:
        assert "DATABASE_URL is not set" in message
        assert "ENVIRONMENT=development" in message
        with pytest.raises(ConfigurationError):
            CoreSettings(environment=environment or "production").resolved_url()
    assert not (no_environment / ".data").exists()


def test_development_from_the_dotenv_file_allows_the_embedded_server(
    no_environment: Path,
) -> None:
    (no_environment / ".env").write_text("ENVIRONMENT=development\n", encoding="utf-8")
    settings = CoreSettings.load()
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.validated_url() is None  # the embedded server, started on first use


# --- the Makefile chooses development for developer targets only -------------------------


def make_dry_run(target: str, cwd: Path, **env: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    base = {k: v for k, v in os.environ.items() if k not in {"ENVIRONMENT", "APP_ENV"}}
    base.pop("MAKEFLAGS", None)
    result = subprocess.run(
        ["make", "-n", "-f", str(cwd / "Makefile"), target],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def makefile_dir(tmp_path: Path) -> Path:
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    return tmp_path


@pytest.mark.parametrize(
    "target",
    ["run", "run-bibikos", "db-core-migrate", "db-core-seed", "db-core-reset", "db-core-status"],
)
def test_make_chooses_development_for_developer_targets(makefile_dir: Path, target: str) -> None:
    for line in make_dry_run(target, makefile_dir).splitlines():
        if " db " in line or "uvicorn" in line:
            # `url=$(... db core dev-url)`: the command inside the substitution counts.
            command = line.lstrip().removeprefix("url=$(")
            assert command.startswith("ENVIRONMENT=development "), line


@pytest.mark.parametrize("target", ["db-core-deploy", "migrate-remote", "pytest"])
def test_make_never_chooses_development_for_deploys_and_tests(
    makefile_dir: Path, target: str
) -> None:
    assert "development" not in make_dry_run(target, makefile_dir)


@pytest.mark.parametrize(
    ("dotenv", "env"),
    [
        ("ENVIRONMENT=production\n", {}),
        ("export APP_ENV = staging\n", {}),
        ("", {"ENVIRONMENT": "production"}),
    ],
    ids=["dotenv", "dotenv-alias", "environment"],
)
def test_make_respects_an_environment_set_elsewhere(
    makefile_dir: Path, dotenv: str, env: dict[str, str]
) -> None:
    if dotenv:
        (makefile_dir / ".env").write_text(dotenv, encoding="utf-8")
    assert "ENVIRONMENT=development" not in make_dry_run("run", makefile_dir, **env)


# --- 3. no bound parameters in logs unless opted in --------------------------------------

SQL_LOGGERS = ("sqlalchemy.engine", "sqlalchemy.engine.Engine", "sqlalchemy.pool")


@pytest.fixture(autouse=True)
def restore_sql_loggers() -> Iterator[None]:
    """configure_sql_logging sets process-wide logger levels and echo_sql adds a handler bound
    to this test's captured stdout: leave neither to the tests that follow."""
    loggers = [logging.getLogger(name) for name in SQL_LOGGERS]
    saved = [(logger, logger.level, list(logger.handlers)) for logger in loggers]
    yield
    for logger, level, handlers in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers


SECRET_HASH = "$argon2id$v=19$m=65536$SECRET-HASH-7f3a9c"
SECRET_EMAIL = "secret.person.7f3a9c@example.com"


def dev_settings(url: URL, **overrides: object) -> CoreSettings:
    return CoreSettings(environment="development", url=url.render_as_string(False), **overrides)


def insert_user(session_execute: Callable[..., object], email: str, password_hash: str) -> None:
    session_execute(
        text("INSERT INTO auth_users (email, password_hash) VALUES (:email, :hash)"),
        {"email": email, "hash": password_hash},
    )


def leaked(records: list[logging.LogRecord], *secrets: str) -> list[str]:
    lines = []
    for record in records:
        line = f"{record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            line += f" {record.exc_info[1]}"
        if any(secret in line for secret in secrets):
            lines.append(line)
    return lines


@pytest.fixture
def core_at_head(database_at_head: Callable[..., URL]) -> URL:
    return database_at_head(core_db.CONFIG)


def test_development_sql_log_and_errors_carry_no_parameters(
    core_at_head: URL, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = dev_settings(core_at_head)
    configure_sql_logging(settings)  # what the app's entry point does
    db = SQLAlchemyDatabase(core_db.CONFIG, settings=settings)
    try:
        with db.sync_session() as s:
            insert_user(s.execute, SECRET_EMAIL, SECRET_HASH)
        # The same email again: a unique violation whose statement carried the hash.
        with pytest.raises(DuplicateEntryError) as info, db.sync_session() as s:
            insert_user(s.execute, SECRET_EMAIL, SECRET_HASH + "-again")
    finally:
        db.dispose_sync()
    statements = [r for r in caplog.records if r.name.startswith("sqlalchemy.engine")]
    assert any("INSERT INTO auth_users" in r.getMessage() for r in statements), (
        "development logs statements"
    )
    assert leaked(caplog.records, SECRET_HASH, SECRET_EMAIL) == []
    cause = info.value.__cause__
    assert isinstance(cause, IntegrityError)
    assert SECRET_HASH not in str(cause)
    assert SECRET_HASH not in str(info.value)


def test_echo_sql_carries_no_parameters(
    core_at_head: URL, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    engines = build_engines(dev_settings(core_at_head, echo_sql=True), core_at_head)
    try:
        with engines.sync_engine.begin() as conn:
            insert_user(conn.execute, SECRET_EMAIL, SECRET_HASH)
    finally:
        engines.sync_engine.dispose()
    captured = capsys.readouterr()
    assert "INSERT INTO auth_users" in captured.out + captured.err + caplog.text
    assert SECRET_HASH not in captured.out + captured.err
    assert leaked(caplog.records, SECRET_HASH, SECRET_EMAIL) == []


@pytest.mark.parametrize("environment", ["test", "production"])
def test_no_environment_logs_parameters_in_errors(
    core_at_head: URL, environment: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = CoreSettings(environment=environment, url=core_at_head.render_as_string(False))
    engines = build_engines(settings, core_at_head)
    try:
        with engines.sync_engine.begin() as conn:
            insert_user(conn.execute, SECRET_EMAIL, "x")
        with pytest.raises(IntegrityError) as info, engines.sync_engine.begin() as conn:
            insert_user(conn.execute, SECRET_EMAIL, SECRET_HASH)
    finally:
        engines.sync_engine.dispose()
    assert SECRET_HASH not in str(info.value)
    assert leaked(caplog.records, SECRET_HASH) == []


def test_parameters_are_logged_only_when_opted_in(
    core_at_head: URL, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("CORE_DB_LOG_SQL_PARAMETERS", "true")
    settings = dev_settings(core_at_head)
    assert settings.log_sql_parameters
    configure_sql_logging(settings)
    engines = build_engines(settings, core_at_head)
    try:
        with engines.sync_engine.begin() as conn:
            insert_user(conn.execute, SECRET_EMAIL, "x")
        with pytest.raises(IntegrityError) as info, engines.sync_engine.begin() as conn:
            insert_user(conn.execute, SECRET_EMAIL, SECRET_HASH)
    finally:
        engines.sync_engine.dispose()
    assert leaked(caplog.records, SECRET_HASH) != []
    assert SECRET_HASH in str(info.value)
