"""Settings errors: a missing or wrong URL is a clear ``ConfigurationError``, never a leak.

Every error names the variable, the ``.env`` file it looked in and an example, and never
contains the password. Each test controls the environment and the workspace root, so the
``.env`` file read is one the test writes (or none at all).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import core_db
from bibikos_db import BibikosSettings
from core_db import CoreSettings
from db_kit.settings import DRIVER, DatabaseSettings
from db_shared import ConfigurationError

SECRET = "hunter2"
SETTINGS = [
    pytest.param(CoreSettings, "DATABASE_URL", id="core"),
    pytest.param(BibikosSettings, "BIBIKOS_DATABASE_URL", id="bibikos"),
]


@pytest.fixture
def dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An isolated workspace root: no URL, no environment, no pool options set.

    Returns the path of the ``.env`` file the settings will look at (not created).
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DB_WORKSPACE_ROOT", str(tmp_path))
    for name in list(os.environ):
        if name in {"DATABASE_URL", "BIBIKOS_DATABASE_URL", "ENVIRONMENT", "APP_ENV"} or (
            name.startswith(("CORE_DB_", "BIBIKOS_DB_"))
        ):
            monkeypatch.delenv(name)
    return tmp_path.resolve() / ".env"


def load_error(settings_class: type[DatabaseSettings]) -> str:
    with pytest.raises(ConfigurationError) as info:
        settings_class.load()
    return str(info.value)


def assert_clear(message: str, variable: str, dotenv: Path, secret: str | None = SECRET) -> None:
    assert variable in message
    assert str(dotenv) in message, "the message must name the .env file it looked in"
    assert f"{variable}=postgresql://" in message, "the message must give an example URL"
    if secret is not None:
        assert secret not in message


# --- no URL -------------------------------------------------------------------------------


@pytest.mark.parametrize(("settings_class", "variable"), SETTINGS)
@pytest.mark.parametrize("value", [None, "", "   "], ids=["unset", "empty", "blank"])
def test_no_url_in_production_is_an_error(
    dotenv: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings_class: type[DatabaseSettings],
    variable: str,
    value: str | None,
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    if value is not None:
        monkeypatch.setenv(variable, value)
    message = load_error(settings_class)
    assert_clear(message, variable, dotenv, secret=None)
    assert "production" in message


@pytest.mark.parametrize(("settings_class", "variable"), SETTINGS)
@pytest.mark.parametrize("environment", [None, "test"], ids=["unset", "test"])
def test_no_url_outside_development_is_an_error(
    dotenv: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings_class: type[DatabaseSettings],
    variable: str,
    environment: str | None,
) -> None:
    if environment is not None:
        monkeypatch.setenv("ENVIRONMENT", environment)
    message = load_error(settings_class)
    assert_clear(message, variable, dotenv, secret=None)
    assert "ENVIRONMENT=development" in message  # how to choose development
    assert ("unset, which means production" in message) == (environment is None)


def test_no_url_in_development_means_the_embedded_server(
    dotenv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "development")
    settings = CoreSettings.load()
    assert settings.validated_url() is None
    assert settings.is_development
    assert not settings.is_production
    assert "the tools start the embedded server" in settings.safe_url()
    # The runtime never starts a server: that is the tools' job (db_tools.dev).
    with pytest.raises(ConfigurationError, match="DATABASE_URL is not set"):
        settings.resolved_url()
    assert not dotenv.exists()
    assert not (dotenv.parent / ".data").exists()


# --- malformed URL ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("not a url", id="not-a-url"),
        pytest.param(f"postgresql//user:{SECRET}@host/db", id="missing-colon"),
        pytest.param(f"postgresql://user:{SECRET}@host:notaport/db", id="port-not-a-number"),
    ],
)
@pytest.mark.parametrize(("settings_class", "variable"), SETTINGS)
def test_malformed_url_is_an_error(
    dotenv: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings_class: type[DatabaseSettings],
    variable: str,
    url: str,
) -> None:
    monkeypatch.setenv(variable, url)
    message = load_error(settings_class)
    assert_clear(message, variable, dotenv)
    assert "not a valid database URL" in message


# --- wrong driver -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        (f"mysql://u:{SECRET}@h/db", "mysql"),
        (f"postgresql+asyncpg://u:{SECRET}@h/db", "postgresql+asyncpg"),
        (f"postgresql+psycopg2://u:{SECRET}@h/db", "postgresql+psycopg2"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
@pytest.mark.parametrize(("settings_class", "variable"), SETTINGS)
def test_wrong_driver_is_an_error(
    dotenv: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings_class: type[DatabaseSettings],
    variable: str,
    url: str,
    driver: str,
) -> None:
    monkeypatch.setenv(variable, url)
    message = load_error(settings_class)
    assert_clear(message, variable, dotenv)
    assert f"'{driver}'" in message
    assert "psycopg" in message


# --- no database name ---------------------------------------------------------------------


@pytest.mark.parametrize("url", [f"postgresql://u:{SECRET}@h", f"postgresql://u:{SECRET}@h:5432/"])
@pytest.mark.parametrize(("settings_class", "variable"), SETTINGS)
def test_url_without_database_name_is_an_error(
    dotenv: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings_class: type[DatabaseSettings],
    variable: str,
    url: str,
) -> None:
    monkeypatch.setenv(variable, url)
    message = load_error(settings_class)
    assert "names no database" in message
    assert_clear(message, variable, dotenv)


# --- placeholder password -----------------------------------------------------------------


# Only placeholders the message's own example URL cannot contain, so the leak check is exact.
@pytest.mark.parametrize("placeholder", ["changeme", "postgres"])
@pytest.mark.parametrize(("settings_class", "variable"), SETTINGS)
def test_placeholder_password_in_production_is_an_error(
    dotenv: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings_class: type[DatabaseSettings],
    variable: str,
    placeholder: str,
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv(variable, f"postgres://app:{placeholder}@db.example.com/app")
    message = load_error(settings_class)
    assert "placeholder password" in message
    assert f":{placeholder}@" not in message
    assert_clear(message, variable, dotenv, secret=None)


@pytest.mark.parametrize(("settings_class", "variable"), SETTINGS)
def test_placeholder_password_is_refused_only_in_production(
    dotenv: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings_class: type[DatabaseSettings],
    variable: str,
) -> None:
    monkeypatch.setenv(variable, "postgresql://app:changeme@localhost/app")
    monkeypatch.setenv("ENVIRONMENT", "development")
    url = settings_class.load().validated_url()
    assert url is not None
    assert url.password == "changeme"

    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ConfigurationError, match="placeholder password") as info:
        settings_class.load()
    assert ":changeme@" not in str(info.value)


# --- the .env file ------------------------------------------------------------------------


def test_url_from_the_dotenv_file_is_read_and_normalised(dotenv: Path) -> None:
    dotenv.write_text(
        "# written by the test\nBIBIKOS_DATABASE_URL=postgresql://u:pw@db.internal:6543/gym\n"
        "ENVIRONMENT=development\n",
        encoding="utf-8",
    )
    settings = BibikosSettings.load()
    url = settings.validated_url()
    assert url is not None
    assert url.drivername == DRIVER == "postgresql+psycopg"
    assert (url.username, url.password) == ("u", "pw")
    assert (url.host, url.port, url.database) == ("db.internal", 6543, "gym")
    assert settings.safe_url() == "postgresql+psycopg://u:***@db.internal:6543/gym"
    # The other database's variable is not read from BIBIKOS_DATABASE_URL.
    assert CoreSettings.load().validated_url() is None


def test_environment_variable_wins_over_the_dotenv_file(
    dotenv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dotenv.write_text(
        "BIBIKOS_DATABASE_URL=postgresql://u:pw@db.internal:6543/gym\n", encoding="utf-8"
    )
    monkeypatch.setenv("BIBIKOS_DATABASE_URL", "postgres://env:envpw@env.host/from_env")
    url = BibikosSettings.load().validated_url()
    assert url is not None
    assert (url.drivername, url.host, url.port, url.database) == (
        DRIVER,
        "env.host",
        None,
        "from_env",
    )


def test_bad_url_in_the_dotenv_file_names_that_file(dotenv: Path) -> None:
    dotenv.write_text(f"DATABASE_URL=mysql://u:{SECRET}@h/db\n", encoding="utf-8")
    message = load_error(CoreSettings)
    assert_clear(message, "DATABASE_URL", dotenv)


def test_dotenv_outside_the_workspace_root_is_ignored(
    dotenv: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".env").write_text("DATABASE_URL=postgresql://u:pw@h/db\n", encoding="utf-8")
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("ENVIRONMENT", "development")
    assert CoreSettings.load().validated_url() is None


# --- normalisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme", ["postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg_async"]
)
@pytest.mark.parametrize(("settings_class", "variable"), SETTINGS)
def test_postgres_schemes_are_normalised_to_psycopg(
    dotenv: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings_class: type[DatabaseSettings],
    variable: str,
    scheme: str,
) -> None:
    monkeypatch.setenv(variable, f"{scheme}://app:{SECRET}@db.example.com:5433/app")
    settings = settings_class.load()
    url = settings.validated_url()
    assert url is not None
    assert url.render_as_string(hide_password=False) == (
        f"postgresql+psycopg://app:{SECRET}@db.example.com:5433/app"
    )
    assert SECRET not in settings.safe_url()
    assert SECRET not in repr(settings)


# --- pool settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("CORE_DB_POOL_SIZE", "0", "pool_size"),
        ("CORE_DB_POOL_SIZE", "many", "pool_size"),
        ("CORE_DB_CONNECT_TIMEOUT", "0", "connect_timeout"),
        ("CORE_DB_MAX_OVERFLOW", "-1", "max_overflow"),
    ],
)
def test_invalid_pool_setting_is_an_error(
    dotenv: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://u:{SECRET}@h/db")
    monkeypatch.setenv(variable, value)
    message = load_error(CoreSettings)
    assert field in message.lower()
    assert variable in message  # the variable to change, not only the field name
    assert str(dotenv) in message
    assert SECRET not in message


def test_pool_settings_are_read_with_the_db_lib_prefix(
    dotenv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "development")
    monkeypatch.setenv("CORE_DB_POOL_SIZE", "7")
    monkeypatch.setenv("BIBIKOS_DB_POOL_SIZE", "3")
    assert CoreSettings.load().pool_size == 7
    assert BibikosSettings.load().pool_size == 3


def test_migrations_refuse_to_run_through_pgbouncer(monkeypatch: pytest.MonkeyPatch) -> None:
    from db_kit.migrations.migrator import Migrator

    monkeypatch.setenv("CORE_DB_PGBOUNCER", "true")
    core_db.CONFIG.reset()
    try:
        with pytest.raises(ConfigurationError) as info:
            Migrator(core_db.CONFIG)
        assert "directly" in str(info.value)
        assert "DATABASE_URL" in str(info.value)
        settings = core_db.CONFIG.settings()
        from db_kit.engine import connect_args

        assert connect_args(settings)["prepare_threshold"] is None
        assert "options" not in connect_args(settings)
    finally:
        core_db.CONFIG.reset()


def test_validation_errors_never_echo_the_input() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        CoreSettings(pool_size="postgresql://u:hunter2@h/db")  # type: ignore[arg-type]
    assert "hunter2" not in str(info.value)
