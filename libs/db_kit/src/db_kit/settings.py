"""Settings every db lib inherits: one class per database, each naming its URL variable.

A db lib declares::

    class CoreSettings(DatabaseSettings):
        model_config = settings_config(env_prefix="CORE_DB_")
        url: str | None = url_field("DATABASE_URL")

Values come from the environment, then from the workspace root's ``.env``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import AliasChoices, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from db_shared.errors import ConfigurationError

S = TypeVar("S", bound="DatabaseSettings")

DRIVER = "postgresql+psycopg"
_ACCEPTED_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg_async"}


# Passwords refused in production: they are examples, never secrets.
PLACEHOLDER_PASSWORDS = frozenset({"password", "changeme", "postgres", "secret"})


def parse_database_url(
    value: str | URL, *, problem: Callable[[str], ConfigurationError], production: bool
) -> URL:
    """``value`` as a psycopg 3 URL, or ``problem(what is wrong)`` raised.

    The one URL validation of the kit (a database's URL, a tenant's URL): accepts
    ``postgresql://``, ``postgres://`` and ``postgresql+psycopg://``, requires a database
    name, refuses placeholder passwords in production. ``what`` never holds the password.
    """
    if isinstance(value, URL):
        url = value
    else:
        try:
            url = make_url(value.strip())
        except (ArgumentError, ValueError):
            raise problem("is not a valid database URL") from None
    shown = url.render_as_string(hide_password=True)
    if url.drivername not in _ACCEPTED_SCHEMES:
        raise problem(
            f"uses the driver '{url.drivername}' ({shown}), but this project talks to "
            "PostgreSQL through psycopg 3: use postgresql:// or postgresql+psycopg://"
        )
    if not url.database:
        raise problem(f"names no database ({shown}); add it after the host")
    if production and url.password in PLACEHOLDER_PASSWORDS:
        raise problem(f"uses a placeholder password in production ({shown})")
    return url.set(drivername=DRIVER)


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


def workspace_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding ``uv.lock``.

    ``DB_WORKSPACE_ROOT`` overrides the search (containers, installed packages).
    """
    override = os.environ.get("DB_WORKSPACE_ROOT")
    if override:
        return Path(override).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in [here, *here.parents]:
        if (folder / "uv.lock").exists():
            return folder
    return here


def dotenv_path() -> Path:
    """The ``.env`` file settings read (it need not exist)."""
    return workspace_root() / ".env"


def settings_config(env_prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=env_prefix,
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        # A ValidationError's text would otherwise include the input: URLs carry passwords.
        hide_input_in_errors=True,
    )


def url_field(variable: str) -> Any:
    """The URL field of a db lib's settings, read from ``variable`` (no prefix)."""
    return Field(default=None, validation_alias=AliasChoices(variable), repr=False)


class DatabaseSettings(BaseSettings):
    """Connection, pool and logging settings of one database."""

    model_config = settings_config(env_prefix="DB_")

    url_variable: ClassVar[str] = "DATABASE_URL"
    # Name of the database the embedded development server creates for this lib.
    embedded_database: ClassVar[str] = "app"

    url: str | None = Field(default=None, repr=False)
    # Unset means production: a URL is required, no embedded server, errors-only SQL log,
    # development commands refused. Development is chosen explicitly (the Makefile's
    # developer targets, or ENVIRONMENT=development in the environment or .env).
    environment: Environment = Field(
        default=Environment.PRODUCTION,
        validation_alias=AliasChoices("ENVIRONMENT", "APP_ENV"),
    )
    pool_size: int = Field(default=5, ge=1, le=1000)
    max_overflow: int = Field(default=10, ge=0, le=1000)
    pool_timeout: float = Field(default=10.0, gt=0)
    pool_recycle: int = Field(default=1800, ge=-1)
    pool_pre_ping: bool = True
    connect_timeout: int = Field(default=5, ge=1, le=600)
    statement_timeout_ms: int = Field(default=30_000, ge=0)
    # Behind a transaction pooler (PgBouncer pool_mode=transaction): no server-side prepared
    # statements and no `options` startup parameter (set statement_timeout on the role).
    pgbouncer: bool = False
    echo_sql: bool = False
    # Bound parameters (password hashes, token digests, emails) in statement logs, echo
    # and exception text: never, in any environment, unless this is set.
    log_sql_parameters: bool = False
    application_name: str = "data-layer"
    # Route every session to the current tenant: its schema (schema-per-tenant), or its
    # database from the control registry too (database-per-tenant, TenantRoutedDatabase).
    multi_tenant: bool = False
    # Observability (db_kit.observability): statements at least this slow are logged at
    # WARNING by `db_kit.slow_query` (0 turns the log off); the request's correlation id
    # prefixed to each statement as a comment; OpenTelemetry spans when it is installed.
    slow_query_ms: int = Field(default=500, ge=0)
    sql_comments: bool = True
    opentelemetry: bool = True
    # Where the embedded development server keeps its data (relative to the workspace root).
    embedded_data_dir: str = ".data/postgres"
    # Migrations (db_kit.migrations.locks): DDL waits at most this long for a lock, is retried
    # this many times with a growing pause, and no migration statement runs longer than
    # the statement timeout (0: no limit).
    migration_lock_timeout_ms: int = Field(default=2_000, ge=1)
    migration_lock_retries: int = Field(default=3, ge=0, le=50)
    migration_statement_timeout_ms: int = Field(default=900_000, ge=0)
    # `generate`, `deploy` and `status` build the schema the migration files produce in a
    # scratch database created beside the target (needs CREATEDB); or in this empty one.
    shadow_database_url: str | None = Field(default=None, repr=False)
    # Where tenant-registry listeners LISTEN for changes (db_kit.tenancy.lookup); None: the
    # registry database's own URL. Set it to a direct server URL behind PgBouncer in
    # transaction mode, which cannot LISTEN.
    registry_listen_url: str | None = Field(default=None, repr=False)

    @field_validator("registry_listen_url", mode="before")
    @classmethod
    def _validate_registry_listen_url(cls, value: object, info: ValidationInfo) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str | URL):
            return value  # pydantic reports the wrong type
        prefix = str(cls.model_config.get("env_prefix", "")).upper()

        def problem(what: str) -> ConfigurationError:
            return ConfigurationError(f"{prefix}REGISTRY_LISTEN_URL {what}")

        production = str(info.data.get("environment", "")) == "production"
        try:
            url = parse_database_url(value, problem=problem, production=production)
        except ConfigurationError as exc:  # pydantic reports ValueErrors only
            raise ValueError(str(exc)) from None
        return url.render_as_string(hide_password=False)

    @classmethod
    def load(cls: type[S], **overrides: Any) -> S:
        """Read settings from the environment and the root ``.env``, with clear errors."""
        env_file = dotenv_path()
        try:
            settings = cls(_env_file=env_file if env_file.exists() else None, **overrides)
        except ValidationError as exc:
            problems = "; ".join(
                f"{cls._variable_of(err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigurationError(
                f"Invalid {cls.__name__} ({problems}). Read from the environment and {env_file}."
            ) from None
        settings.validated_url()  # fail at load time, not at first query
        return settings

    @classmethod
    def _variable_of(cls, loc: tuple[int | str, ...]) -> str:
        """The environment variable behind a validation error's location."""
        name = str(loc[0]) if loc else ""
        field = cls.model_fields.get(name)
        alias = getattr(field.validation_alias, "choices", None) if field else None
        if alias:
            return str(alias[0])
        if field is not None:
            return f"{cls.model_config.get('env_prefix', '')}{name}".upper()
        return name or "settings"

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    @property
    def environment_label(self) -> str:
        """How the environment was chosen, for messages: unset reads as production."""
        if "environment" in self.model_fields_set:
            return f"ENVIRONMENT={self.environment.value}"
        return "ENVIRONMENT is unset (which means production)"

    @property
    def is_development(self) -> bool:
        """Only an explicit ``ENVIRONMENT=development`` may use the embedded server."""
        return self.environment is Environment.DEVELOPMENT

    @property
    def echo(self) -> bool:
        """Print every statement to stdout (SQLAlchemy's own handler); off unless asked."""
        return bool(self.echo_sql)

    def validated_url(self) -> URL | None:
        """The configured URL normalised to psycopg 3, or None to use the embedded server.

        Raises ``ConfigurationError`` naming the variable, the ``.env`` file and an example;
        the password is never part of the message.
        """
        variable = self.url_variable
        example = f"{variable}=postgresql://user:secret@localhost:5432/{self.embedded_database}"

        def problem(what: str) -> ConfigurationError:
            return ConfigurationError(
                f"{variable} {what}. Set it in the environment or in {dotenv_path()}, "
                f"e.g. {example}"
            )

        if self.url is None or not self.url.strip():
            if self.is_development:
                return None
            chosen = (
                f"ENVIRONMENT={self.environment.value}"
                if "environment" in self.model_fields_set
                else "ENVIRONMENT is unset, which means production"
            )
            raise ConfigurationError(
                f"{variable} is not set and {chosen}; the embedded PostgreSQL is for "
                f"development only, so none is started. Set {variable} in the environment "
                f"or in {dotenv_path()}, e.g. {example}; or choose development explicitly "
                "with ENVIRONMENT=development (the Makefile's developer targets do)."
            )
        return parse_database_url(self.url, problem=problem, production=self.is_production)

    def resolved_url(self) -> URL:
        """The URL to connect to; ``ConfigurationError`` naming the variable when unset.

        Nothing here starts a server: in development the tools (``db ...``, ``make run``,
        the pytest plugin) start the embedded PostgreSQL and set the variable.
        """
        url = self.validated_url()
        if url is None:
            raise ConfigurationError(
                f"{self.url_variable} is not set. In development the tools start the embedded "
                f"PostgreSQL and set it (`make run`, `db ...`); otherwise set it in the "
                f"environment or in {dotenv_path()}."
            )
        return url

    def registry_listen_target(self) -> URL | None:
        """``registry_listen_url`` as a URL (with its password: do not print it); None: unset."""
        return make_url(self.registry_listen_url) if self.registry_listen_url else None

    def safe_url(self) -> str:
        """The URL for messages and logs, password masked (never starts anything)."""
        url = self.validated_url()
        if url is None:
            return f"{self.url_variable} not set (development: the tools start the embedded server)"
        return url.render_as_string(hide_password=True)
