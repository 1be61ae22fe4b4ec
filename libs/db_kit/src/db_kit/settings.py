"""Settings every db lib inherits: one class per database, each naming its URL variable.

A db lib declares::

    class CoreSettings(DatabaseSettings):
        model_config = settings_config(env_prefix="CORE_DB_")
        url: str | None = url_field("DATABASE_URL")

Values come from the environment, then from the workspace root's ``.env``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import (
    AliasChoices,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
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


# Server names: identifiers, as they label metrics, health answers and placement.
_SERVER_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
DEFAULT_MAX_LAG_MS = 1000
DEFAULT_SERVER = "main"


@dataclass(frozen=True)
class ServerSettings:
    """One PostgreSQL server of a fleet: its primary (a libpq multi-host URL with
    ``target_session_attrs=read-write`` is fine), its streaming replicas, and how far
    behind (in ms) a replica may be to serve read sessions."""

    name: str
    primary: URL
    replicas: tuple[URL, ...] = ()
    max_lag_ms: int = DEFAULT_MAX_LAG_MS

    def replica_names(self) -> tuple[str, ...]:
        """``<server>_replica_<n>`` (from 1): what health and metrics call each replica; a
        name shows no host."""
        return tuple(f"{self.name}_replica_{i}" for i in range(1, len(self.replicas) + 1))


def parse_servers(
    value: str | Mapping[str, Any],
    *,
    variable: str,
    production: bool,
) -> dict[str, ServerSettings]:
    """``<PREFIX>SERVERS``: a JSON object, server name -> ``{"primary": URL, "replicas":
    [URL, ...], "max_lag_ms": int}``; ``ConfigurationError`` naming ``variable`` and the
    server, never a password. ``primary`` may be left out (the main URL is used)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(
                f"{variable} is not valid JSON ({exc.msg} at character {exc.pos}); expected "
                '{"main": {"primary": "postgresql://...", "replicas": ["postgresql://..."], '
                '"max_lag_ms": 1000}}.'
            ) from None
    if not isinstance(value, Mapping) or not value:
        raise ConfigurationError(
            f"{variable} must be a JSON object mapping server names to "
            '{"primary": ..., "replicas": [...], "max_lag_ms": ...}.'
        )
    servers: dict[str, ServerSettings] = {}
    for name, spec in value.items():
        if not isinstance(name, str) or _SERVER_NAME.fullmatch(name) is None:
            shown = repr(name)[:50]
            raise ConfigurationError(
                f"{variable}: server name {shown} is not an identifier (a lower-case letter, "
                "then lower-case letters, digits or _; at most 40)."
            )
        if not isinstance(spec, Mapping):
            raise ConfigurationError(
                f"{variable}: server {name!r} must be an object with primary, replicas, "
                f"max_lag_ms; got {type(spec).__name__}."
            )
        unknown = sorted(set(spec) - {"primary", "replicas", "max_lag_ms"})
        if unknown:
            raise ConfigurationError(
                f"{variable}: server {name!r} has unknown keys {unknown} "
                "(expected primary, replicas, max_lag_ms)."
            )

        def url(raw: object, what: str, server: str = name) -> URL:
            if not isinstance(raw, str) or not raw.strip():
                raise ConfigurationError(
                    f"{variable}: server {server!r}: {what} must be a database URL string."
                )

            def problem(text: str) -> ConfigurationError:
                return ConfigurationError(f"{variable}: server {server!r}: {what} {text}.")

            return parse_database_url(raw, problem=problem, production=production)

        primary = spec.get("primary")
        raw_replicas = spec.get("replicas", [])
        if not isinstance(raw_replicas, list):
            raise ConfigurationError(
                f"{variable}: server {name!r}: replicas must be a list of URLs."
            )
        max_lag = spec.get("max_lag_ms", DEFAULT_MAX_LAG_MS)
        if (
            isinstance(max_lag, bool)
            or not isinstance(max_lag, int)
            or not 0 < max_lag <= 3_600_000
        ):
            raise ConfigurationError(
                f"{variable}: server {name!r}: max_lag_ms must be an integer from 1 to 3600000."
            )
        servers[name] = ServerSettings(
            name=name,
            # Filled with the main URL by DatabaseSettings.fleet() when left out.
            primary=url(primary, "the primary URL") if primary is not None else _NO_URL,
            replicas=tuple(url(r, f"replica {i}") for i, r in enumerate(raw_replicas, start=1)),
            max_lag_ms=max_lag,
        )
    return servers


_NO_URL = URL.create(DRIVER)


def same_target(a: URL, b: URL) -> bool:
    """Whether two URLs name the same server(s), database and user (password aside)."""
    return a.set(password=None) == b.set(password=None)


def _where(url: URL) -> tuple[object, ...]:
    """Where a URL connects: host and port (libpq multi-host lists too), not the database."""
    return (url.host, url.port or 5432, url.query.get("host"), url.query.get("port"))


class PlacementPolicy(StrEnum):
    """Where ``tenants create`` puts a new tenant when no ``--server`` is given."""

    # The server holding the fewest tenants (ties: the home server, then by name).
    FEWEST = "fewest"
    # Nowhere: with several servers, ``--server`` must be given.
    EXPLICIT = "explicit"


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
    # The fleet (<PREFIX>SERVERS, JSON): server name -> primary URL, replica URLs, replica
    # lag bound in ms. Unset: one server, the main URL, no replicas. See ``fleet()``.
    servers: str | None = Field(default=None, repr=False)
    # Where new tenants go when no server is named (<PREFIX>PLACEMENT): fewest or explicit.
    placement: PlacementPolicy = PlacementPolicy.FEWEST
    # fleet()'s answer, with the values it was parsed from.
    _fleet_cache: tuple[tuple[object, ...], dict[str, ServerSettings]] | None = PrivateAttr(
        default=None
    )

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
        settings.fleet()
        return settings

    @property
    def servers_variable(self) -> str:
        return f"{self.model_config.get('env_prefix', '')}SERVERS".upper()

    def fleet(self) -> dict[str, ServerSettings]:
        """The servers of this database: ``<PREFIX>SERVERS``, or one server (``main``) on
        the main URL with no replicas when unset. Parsed once per value of the settings it
        reads (routing asks often); a copy of the dict is returned.

        One server is the home server: its primary is what the main URL names (password
        aside), and it holds the tenant registry. A server whose primary is left out is the
        main URL's; with one server and the main URL unset, its primary is the main URL.
        """
        key = (self.url, self.servers, self.environment)
        cached = self._fleet_cache
        if cached is None or cached[0] != key:
            cached = self._fleet_cache = (key, self._parse_fleet())
        return dict(cached[1])

    def _parse_fleet(self) -> dict[str, ServerSettings]:
        variable = self.servers_variable
        if not self.servers or not self.servers.strip():
            url = self.validated_url()
            return {} if url is None else {DEFAULT_SERVER: ServerSettings(DEFAULT_SERVER, url)}
        servers = parse_servers(self.servers, variable=variable, production=self.is_production)
        main = self.validated_url() if self.url and self.url.strip() else None
        if main is None and len(servers) > 1:
            raise ConfigurationError(
                f"{variable} lists {len(servers)} servers ({', '.join(servers)}) but "
                f"{self.url_variable} is not set: set it to the primary of the home server "
                "(the one holding the tenant registry)."
            )
        left_out = [name for name, server in servers.items() if server.primary is _NO_URL]
        if len(left_out) > 1:
            raise ConfigurationError(
                f"{variable}: servers {', '.join(map(repr, left_out))} have no primary URL; "
                f"only the home server may leave it out (it is {self.url_variable})."
            )
        fleet: dict[str, ServerSettings] = {}
        for name, server in servers.items():
            if server.primary is _NO_URL:
                if main is None:
                    raise ConfigurationError(
                        f"{variable}: server {name!r} has no primary URL and "
                        f"{self.url_variable} is not set: set one of them."
                    )
                server = ServerSettings(name, main, server.replicas, server.max_lag_ms)
            fleet[name] = server
        targets: dict[tuple[object, ...], str] = {}
        for name, server in fleet.items():
            key = _where(server.primary)
            if key in targets:
                raise ConfigurationError(
                    f"{variable}: servers {targets[key]!r} and {name!r} have their primary on "
                    f"the same host and port ({server.primary.render_as_string(hide_password=True)}"
                    "); each server of a fleet is its own PostgreSQL server."
                )
            targets[key] = name
        if main is not None and not any(same_target(main, s.primary) for s in fleet.values()):
            shown = main.render_as_string(hide_password=True)
            if len(fleet) == 1:
                ((name, server),) = fleet.items()
                raise ConfigurationError(
                    f"{variable}: the primary of server {name!r} "
                    f"({server.primary.render_as_string(hide_password=True)}) is not what "
                    f"{self.url_variable} names ({shown}); "
                    "with one server they must be the same (or leave primary out)."
                )
            raise ConfigurationError(
                f"{variable}: no server's primary is what {self.url_variable} names ({shown}); "
                "one server must be the home server, which holds the tenant registry: give it "
                f"that primary, or leave its primary out."
            )
        return fleet

    def home_server(self) -> str | None:
        """The name of the server the main URL names (it holds the registry); None when no
        URL is known yet (development before the embedded server is up)."""
        main = self.validated_url()
        if main is None:
            return None
        for name, server in self.fleet().items():
            if same_target(main, server.primary):
                return name
        return None  # pragma: no cover - fleet() refuses a fleet without a home

    def server_of(self, url: URL) -> ServerSettings | None:
        """The server whose primary runs ``url``'s database (same host and port, any
        database); None when ``url`` names no server of the fleet."""
        where = _where(url)
        for server in self.fleet().values():
            if _where(server.primary) == where:
                return server
        return None

    def replica_urls(self) -> tuple[ServerSettings | None, tuple[URL, ...]]:
        """The home server and its replica URLs; ``(None, ())`` without a fleet."""
        fleet = self.fleet()
        if not fleet:
            return None, ()
        home = self.home_server()
        server = fleet[home] if home is not None else next(iter(fleet.values()))
        return server, server.replicas

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

        if (self.url is None or not self.url.strip()) and self.servers and self.servers.strip():
            # The main URL may come from the (only) server's primary.
            servers = parse_servers(
                self.servers, variable=self.servers_variable, production=self.is_production
            )
            primaries = [s.primary for s in servers.values() if s.primary is not _NO_URL]
            if len(servers) == 1 and primaries:
                return primaries[0]
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
