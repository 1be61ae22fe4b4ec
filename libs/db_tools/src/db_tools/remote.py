"""Deploy the migrations of chosen databases to a remote server: the migration container's job.

For each chosen database (``MIGRATE_DATABASES``, or arguments): read its URL (a missing
one is an error naming the variable: the embedded development server is never started
here), refuse a transaction pooler, wait a bounded time for the server to answer, then
deploy under the advisory lock (``Migrator.deploy`` refuses models/migrations drift) and
bring its tenants to head: every schema of a schema-per-tenant database's registry, every
configured database of a database-per-tenant one.

Waiting retries only what time can fix (connection refused, timeout, a host name not
resolvable yet, a server still starting); a wrong password or a missing database fails at
once with its own reason. Output is plain lines: one per step, or one ``error:`` line and
a non-zero exit. Passwords are never printed: URLs are shown masked and every line is
scrubbed of the configured passwords as a last guard.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

import psycopg
from alembic.util import CommandError
from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings
from sqlalchemy import create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from db_kit.config import DatabaseConfig
from db_kit.engine import connect_args
from db_kit.errors import ConnectFailure, classify_connect_error, first_line, translate
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.outcome import Outcome
from db_kit.settings import DatabaseSettings, dotenv_path, settings_config
from db_shared.errors import ConfigurationError, DatabaseError

# The port PgBouncer listens on by default: worth a warning, not a refusal.
PGBOUNCER_PORT = 6432
RETRY_PAUSE = 1.0


class RemoteDeployError(DatabaseError):
    """A deploy step failed; the message is the one line the operator reads."""

    def __init__(self, message: str, kind: ConnectFailure | None = None) -> None:
        self.kind = kind
        super().__init__(message)


class RemoteSettings(BaseSettings):
    """``MIGRATE_*`` variables of the migration container (environment, then ``.env``)."""

    model_config = settings_config(env_prefix="MIGRATE_")

    # Comma- or space-separated database names; empty: every installed database.
    databases: str = ""
    # Seconds to wait for each server to answer before giving up.
    wait_timeout: float = Field(default=60.0, gt=0, le=3600)
    # Worker processes for schema-per-tenant migrations.
    tenant_workers: int = Field(default=2, ge=1, le=64)
    # The databases' own ENVIRONMENT, read here only to tell "unset" (production) apart.
    environment: str | None = Field(
        default=None, validation_alias=AliasChoices("ENVIRONMENT", "APP_ENV")
    )

    @classmethod
    def load(cls) -> RemoteSettings:
        env_file = dotenv_path()
        try:
            return cls(_env_file=env_file if env_file.exists() else None)
        except ValidationError as exc:
            problems = "; ".join(
                f"MIGRATE_{str(err['loc'][0]).upper()}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigurationError(
                f"Invalid migration settings ({problems}). Read from the environment and "
                f"{env_file}."
            ) from None


# connection failures -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One database to connect to and how to name it in messages."""

    label: str  # "core", "bibikos tenant us"
    url: URL
    variable: str  # where the URL comes from

    @property
    def address(self) -> str:
        return f"{self.url.host or 'localhost'}:{self.url.port or 5432}"

    @property
    def shown(self) -> str:
        return self.url.render_as_string(hide_password=True)


def wait_until_reachable(
    target: Target,
    settings: DatabaseSettings,
    *,
    timeout: float,
    deadline: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Connect to ``target`` until it answers or ``timeout`` seconds have passed.

    ``deadline`` (``time.monotonic()``) shares one window between several targets.
    Raises ``RemoteDeployError`` with one line: at once for a wrong password, a missing
    database or any other refusal; after the deadline when the server never answered.
    """
    if deadline is None:
        deadline = time.monotonic() + timeout
    args = connect_args(settings)
    while True:
        remaining = deadline - time.monotonic()
        # libpq counts whole seconds and treats less than 2 as 2.
        args["connect_timeout"] = max(2, min(settings.connect_timeout, math.ceil(remaining)))
        engine = create_engine(target.url, poolclass=NullPool, connect_args=args)
        try:
            with engine.connect():
                return
        except (sa_exc.DBAPIError, psycopg.Error) as exc:
            kind, reason = classify_connect_error(exc)
        finally:
            engine.dispose()
        if kind is ConnectFailure.CREDENTIALS:
            raise RemoteDeployError(
                f"{target.label}: {target.address} refused the credentials of user "
                f"{target.url.username!r} ({reason}). Fix the user or password in "
                f"{target.variable}.",
                kind,
            )
        if kind is ConnectFailure.NO_DATABASE:
            raise RemoteDeployError(
                f"{target.label}: {reason} on {target.address}. Create it on the server, or "
                f"fix the database name in {target.variable}.",
                kind,
            )
        if kind is ConnectFailure.REFUSED:
            raise RemoteDeployError(
                f"{target.label}: {target.address} refused the connection ({reason}). Fix "
                f"{target.variable} or the server's access rules.",
                kind,
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RemoteDeployError(
                f"{target.label}: PostgreSQL at {target.address} did not answer within "
                f"{timeout:g} s (last error: {reason}). Check the host and port in "
                f"{target.variable} and that the server runs, or raise MIGRATE_WAIT_TIMEOUT.",
                kind,
            )
        sleep(min(RETRY_PAUSE, remaining))


# deploying ------------------------------------------------------------------------------


def direct_url(db: DatabaseConfig, settings: DatabaseSettings) -> URL:
    """The database's URL for migrations: set, and not through a transaction pooler."""
    url = settings.validated_url()
    if url is None:
        raise ConfigurationError(
            f"{settings.url_variable} is not set: the migration container deploys to an "
            f"existing server and never starts an embedded one. Set it in the environment "
            f"or the env file, e.g. {settings.url_variable}=postgresql://user:pw@host:5432/"
            f"{settings.embedded_database}"
        )
    if settings.pgbouncer:
        prefix = str(settings.model_config.get("env_prefix", "")).upper()
        raise ConfigurationError(
            f"{prefix}PGBOUNCER is on for {db.name}: migrations hold a session advisory lock "
            "and one transaction per revision, which a transaction pooler breaks. Point "
            f"{settings.url_variable} at PostgreSQL directly and unset {prefix}PGBOUNCER."
        )
    return url


def _revisions(revs: Sequence[str] | None) -> str:
    return ", ".join(revs) if revs else "(empty)"


@dataclass
class RemoteDeploy:
    """Deploys chosen databases one after the other, printing one line per step."""

    databases: Sequence[DatabaseConfig]
    timeout: float
    workers: int = 2
    out: TextIO = field(default_factory=lambda: sys.stdout)
    secrets: set[str] = field(default_factory=set)
    failed: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        print(redact(line, self.secrets), file=self.out, flush=True)

    def _step(self, name: str, before: Sequence[str], after: Sequence[str]) -> None:
        if tuple(before) == tuple(after):
            self.say(f"{name}: already at head ({_revisions(after)}); nothing to do.")
        else:
            self.say(f"{name}: deployed {_revisions(before)} -> {_revisions(after)}.")

    def run(self) -> bool:
        """Deploy every database; False when a tenant failed (errors raise).

        Each database's server gets ``timeout`` seconds to answer, counted when its turn
        comes (the one before may have had long migrations); its tenant databases share
        one such window.
        """
        prepared = []
        # Read and check every database's settings before touching any server.
        for db in self.databases:
            settings = db.settings()
            url = direct_url(db, settings)
            self.secrets.update(_passwords(url))
            prepared.append((db, settings, url))
        for db, settings, url in prepared:
            if url.port == PGBOUNCER_PORT:
                self.say(
                    f"warning: {settings.url_variable} uses port {PGBOUNCER_PORT}, PgBouncer's "
                    "default; migrations must reach PostgreSQL directly, not a transaction pooler."
                )
            target = Target(db.name, url, settings.url_variable)
            wait_until_reachable(target, settings, timeout=self.timeout)
            self.say(f"{db.name}: connected to {target.shown}")
            if db.registry is not None:
                self._step(db.registry.name, *Migrator(db.registry, url).deploy())
            self._step(db.name, *Migrator(db, url).deploy())
            if db.tenancy is not None:
                self._schema_tenants(db, url)
            self._database_tenants(db, settings, url)
        return not self.failed

    def _schema_tenants(self, db: DatabaseConfig, url: URL) -> None:
        from db_kit.migrations.schema_tenants import SchemaTenantMigrator

        results = SchemaTenantMigrator(db, url).migrate_all(workers=self.workers, verify=True)
        for r in sorted(results, key=lambda r: r.slug):
            if r.failed:
                self.failed.append(f"{db.name} tenant {r.slug}")
                self.say(f"{db.name} tenant {r.slug}: failed: {r.error}")
            elif r.status is Outcome.MIGRATED:
                self.say(
                    f"{db.name} tenant {r.slug}: deployed {r.before or '(empty)'} -> {r.after}."
                )
        if not results:
            self.say(f"{db.name} tenant schemas: none registered.")
            return
        self._tenant_summary(f"{db.name} tenant schemas", [r.status for r in results])

    def _database_tenants(self, db: DatabaseConfig, settings: DatabaseSettings, url: URL) -> None:
        """Every tenant database, registered (control registry) or in the tenant map."""
        from db_kit.migrations import TenantDatabaseMigrator
        from db_kit.tenancy import TenantDatabaseSettings

        if db.tenancy is not None or not isinstance(settings, TenantDatabaseSettings):
            return
        variable = settings.tenant_urls_variable
        migrator = TenantDatabaseMigrator(db, control=url)
        urls = migrator.resolver.urls()
        deadline = time.monotonic() + self.timeout
        reachable: dict[str, URL] = {}
        statuses: list[str] = []
        for slug, url in urls.items():
            self.secrets.update(_passwords(url))
            target = Target(f"{db.name} tenant {slug}", url, variable)
            try:
                wait_until_reachable(target, settings, timeout=self.timeout, deadline=deadline)
            except RemoteDeployError as exc:
                self.failed.append(target.label)
                statuses.append(Outcome.FAILED)
                hint = ""
                if exc.kind is ConnectFailure.NO_DATABASE:
                    hint = f" `db {db.name} tenants create {slug}` creates it."
                self.say(f"{exc}{hint}")
                continue
            reachable[slug] = url
        for r in migrator.migrate_all(only=sorted(reachable)) if reachable else []:
            statuses.append(r.status)
            if r.failed:
                self.failed.append(f"{db.name} tenant {r.slug}")
                self.say(f"{db.name} tenant {r.slug}: failed: {r.error}")
            else:
                self._step(
                    f"{db.name} tenant {r.slug}",
                    r.before.split(",") if r.before else (),
                    r.after.split(",") if r.after else (),
                )
        if urls:
            self._tenant_summary(f"{db.name} tenant databases", statuses)

    def _tenant_summary(self, what: str, statuses: list[str]) -> None:
        migrated = statuses.count(Outcome.MIGRATED)
        failed = statuses.count(Outcome.FAILED)
        self.say(
            f"{what}: {migrated} migrated, {len(statuses) - migrated - failed} already at head, "
            f"{failed} failed."
        )


def _passwords(url: URL) -> set[str]:
    password = url.password
    return {password} if isinstance(password, str) and len(password) >= 4 else set()


def redact(line: str, secrets: set[str]) -> str:
    """``line`` with every configured password masked (short ones would mask ordinary words)."""
    for secret in sorted(secrets, key=len, reverse=True):
        line = line.replace(secret, "***")
    return line


def choose(names: Sequence[str], available: dict[str, DatabaseConfig]) -> list[DatabaseConfig]:
    """The configs named (comma- or space-separated, ``all`` for every one), in that order."""
    wanted = [n for part in names for n in re.split(r"[\s,]+", part) if n]
    if not wanted or wanted == ["all"]:
        return list(available.values())
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise ConfigurationError(
            f"Unknown database {unknown[0]!r} in MIGRATE_DATABASES (or the arguments); "
            f"choose from: {', '.join(available)} (comma-separated), or all."
        )
    return [available[n] for n in dict.fromkeys(wanted)]


def failure_line(exc: BaseException) -> str:
    """One line for any failure of a deploy: never a traceback."""
    if isinstance(exc, DatabaseError):
        return str(exc).strip()
    if isinstance(exc, CommandError):
        return f"Alembic: {str(exc).strip()}"
    mapped = translate(exc)
    if mapped is not None:
        return str(mapped)
    if isinstance(exc, sa_exc.DBAPIError):
        reason = first_line(exc)
        return (
            f"{reason}. The failed revision's transaction was rolled back; nothing of it remains."
        )
    first = str(exc).strip().splitlines()
    return f"unexpected {type(exc).__name__}: {first[0] if first else ''}".rstrip(": ")


@contextmanager
def _production_unless_told(remote: RemoteSettings) -> Iterator[None]:
    # A remote deploy is production unless ENVIRONMENT (environment or .env) says otherwise:
    # placeholder passwords refused, errors-only logging.
    added = remote.environment is None
    if added:
        os.environ["ENVIRONMENT"] = "production"
    try:
        yield
    finally:
        if added:
            os.environ.pop("ENVIRONMENT", None)


def main(argv: Sequence[str] | None = None) -> int:
    """Deploy the databases named in ``argv`` (else ``MIGRATE_DATABASES``); the exit code."""
    from db_tools.discovery import discover

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    deploy: RemoteDeploy | None = None
    try:
        remote = RemoteSettings.load()
        with _production_unless_told(remote):
            chosen = choose(args or [remote.databases], discover())
            for db in chosen:
                db.reset()
                if db.registry is not None:
                    db.registry.reset()
            deploy = RemoteDeploy(chosen, remote.wait_timeout, remote.tenant_workers)
            deploy.say(
                f"deploying {', '.join(db.name for db in chosen)} "
                f"(waiting up to {remote.wait_timeout:g} s for each server)"
            )
            ok = deploy.run()
    except Exception as exc:
        secrets = deploy.secrets if deploy is not None else set()
        print(f"error: {redact(failure_line(exc), secrets)}", file=sys.stderr, flush=True)
        return 1
    if not ok:
        print(
            f"error: {len(deploy.failed)} tenant(s) failed: {', '.join(deploy.failed)}; "
            "the others are at head. Fix them and run again (it resumes).",
            file=sys.stderr,
            flush=True,
        )
        return 1
    deploy.say(f"done: {', '.join(db.name for db in chosen)} at head.")
    return 0
