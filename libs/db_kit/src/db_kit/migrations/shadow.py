"""Shadow databases: the schema the migration files produce, built where nobody works.

``generate``, ``deploy`` and ``status`` must compare the models with what the migrations
build, never with a live database that ``push`` or a hand-made change may have moved
(a scratch database built from the migration files, never the one you work on). The shadow is a new database created beside
the target (``CREATE DATABASE``, so the role needs CREATEDB) and dropped afterwards, or the
empty database ``<PREFIX>SHADOW_DATABASE_URL`` names, emptied again after use.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

from sqlalchemy import Connection, create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from db_kit.errors import first_line, translating
from db_kit.settings import DatabaseSettings, parse_database_url
from db_kit.sql import quote_identifier
from db_shared.errors import ConfigurationError

SHADOW_MARK = "_shadow_"
_SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema', 'pg_toast')"


class ShadowDatabaseError(ConfigurationError):
    """No scratch database could be had to build the migrations in."""


def shadow_variable(settings: DatabaseSettings) -> str:
    prefix = str(settings.model_config.get("env_prefix", "")).upper()
    return f"{prefix}SHADOW_DATABASE_URL"


def configured_shadow(settings: DatabaseSettings) -> URL | None:
    """``<PREFIX>SHADOW_DATABASE_URL`` normalised to psycopg 3, or None."""
    raw = (settings.shadow_database_url or "").strip()
    if not raw:
        return None
    variable = shadow_variable(settings)

    def problem(what: str) -> ConfigurationError:
        return ShadowDatabaseError(f"{variable} {what}; it must name an empty database.")

    return parse_database_url(raw, problem=problem, production=False)


def _engine(url: URL, settings: DatabaseSettings) -> Connection:
    engine = create_engine(
        url,
        poolclass=NullPool,
        connect_args={"connect_timeout": settings.connect_timeout},
        hide_parameters=True,
    )
    try:
        with translating(url=url):
            return engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    except Exception:
        engine.dispose()
        raise


def _user_schemas(conn: Connection) -> list[str]:
    rows = conn.execute(
        text(
            "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname NOT IN "
            f"{_SYSTEM_SCHEMAS} AND nspname NOT LIKE 'pg\\_%'"
        )
    )
    return [r[0] for r in rows]


def _empty(conn: Connection) -> bool:
    found = conn.execute(
        text(
            "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            f"ON n.oid = c.relnamespace WHERE n.nspname NOT IN {_SYSTEM_SCHEMAS} "
            "AND n.nspname NOT LIKE 'pg\\_%'"
        )
    ).scalar_one()
    return int(found) == 0


@contextlib.contextmanager
def _configured(url: URL, settings: DatabaseSettings) -> Iterator[URL]:
    variable = shadow_variable(settings)
    conn = _engine(url, settings)
    try:
        if not _empty(conn):
            raise ShadowDatabaseError(
                f"{variable} ({url.render_as_string(hide_password=True)}) is not empty: the "
                "shadow database is rebuilt from the migrations each time, so it must hold "
                "nothing else. Point it at an empty database of its own."
            )
        yield url
    finally:
        # Empty it again: drop what the migrations made (it was empty before).
        with contextlib.suppress(sa_exc.DBAPIError):
            for schema in _user_schemas(conn):
                quoted = quote_identifier(schema)
                conn.execute(text(f"DROP SCHEMA {quoted} CASCADE"))
            conn.execute(text("CREATE SCHEMA IF NOT EXISTS public"))
        conn.close()
        conn.engine.dispose()


@contextlib.contextmanager
def shadow_database(settings: DatabaseSettings, target: URL) -> Iterator[URL]:
    """An empty database on ``target``'s server (or the configured one) for the block."""
    configured = configured_shadow(settings)
    if configured is not None:
        with _configured(configured, settings) as url:
            yield url
        return
    base = (target.database or "db")[:30]
    name = f"{base}{SHADOW_MARK}{os.getpid()}_{uuid.uuid4().hex[:8]}"
    # CREATE/DROP DATABASE may be issued from any database of the server: use the target.
    conn = _engine(target, settings)
    try:
        quoted = quote_identifier(name)
        try:
            conn.execute(text(f"CREATE DATABASE {quoted} TEMPLATE template0"))
        except sa_exc.DBAPIError as exc:
            reason = first_line(exc)
            raise ShadowDatabaseError(
                f"Could not create a shadow database on {target.host}:{target.port or 5432} to "
                f"build the migrations in ({reason}). Grant CREATEDB to "
                f"{target.username or 'the role'} or set {shadow_variable(settings)} to an "
                "empty database."
            ) from None
        try:
            yield target.set(database=name)
        finally:
            with contextlib.suppress(sa_exc.DBAPIError):
                conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    finally:
        conn.close()
        conn.engine.dispose()
