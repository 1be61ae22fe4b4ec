"""The Alembic ``env.py`` body every db lib shares.

A db lib's ``migrations/env.py`` is two lines::

    from db_kit.migrations.env import run_env
    run_env("core_db.config:CONFIG")

The connection may be handed in through ``config.attributes["connection"]`` (the CLI, the
tenant runner, pytest-alembic); otherwise one is opened from the db lib's settings.
Each revision runs in its own transaction, under a PostgreSQL advisory lock, so two deploys
at once apply the revisions once.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from alembic import context
from alembic.operations import Operations
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from alembic.script import Script
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateTable

from db_kit.config import DatabaseConfig, _import
from db_kit.engine import build_admin_engine
from db_kit.migrations.locks import no_lock_timeouts, offline_timeouts_sql, set_migration_timeouts

LOCK_CLASS = 0x4442  # first key of every lock this toolkit takes ("DB")


def lock_key(version_table: str, schema: str | None = None) -> int:
    """Second advisory-lock key: one lock per version table (per schema)."""
    return zlib.crc32(f"{schema or ''}.{version_table}".encode()) & 0x7FFFFFFF


def advisory_lock(connection: Connection, key: int, *, xact: bool) -> None:
    """Take the migration advisory lock ``(LOCK_CLASS, key)``, waiting as long as it takes.

    Tried without waiting first; only a real wait runs with ``lock_timeout`` and
    ``statement_timeout`` off (waiting for another deploy is what the lock is for).
    """
    fn = "pg_advisory_xact_lock" if xact else "pg_advisory_lock"
    params = {"c": LOCK_CLASS, "k": key}
    if connection.execute(text(f"SELECT pg_try_{fn.removeprefix('pg_')}(:c, :k)"), params).scalar():
        return
    with no_lock_timeouts(connection):
        connection.execute(text(f"SELECT {fn}(:c, :k)"), params)


@contextmanager
def migration_lock(connection: Connection, key: int) -> Iterator[None]:
    """Hold the migration advisory lock on ``connection`` for the block.

    Inside a caller's transaction the lock is transaction-scoped; otherwise it is taken at
    session level and the connection is left outside any transaction for Alembic.
    """
    if connection.in_transaction():
        advisory_lock(connection, key, xact=True)
        yield
        return
    advisory_lock(connection, key, xact=False)
    connection.commit()
    try:
        yield
    finally:
        if connection.in_transaction():
            connection.rollback()
        connection.execute(text("SELECT pg_advisory_unlock(:c, :k)"), {"c": LOCK_CLASS, "k": key})
        connection.commit()


def _skip_empty(ctx: MigrationContext, revision: Any, directives: list[MigrationScript]) -> None:
    # Autogenerate with no model change writes nothing; the CLI reports it.
    script = directives[0]
    if script.upgrade_ops is not None and script.upgrade_ops.is_empty():
        directives[:] = []
        ctx.config.attributes["empty_autogenerate"] = True  # type: ignore[union-attr]


def configure_options(db: DatabaseConfig, version_schema: str | None = None) -> dict[str, Any]:
    """Options shared by migrations, autogenerate and drift checks."""
    options: dict[str, Any] = {
        "target_metadata": db.metadata,
        "version_table": db.version_table,
        "version_table_schema": version_schema or db.version_table_schema,
        "compare_type": True,
        "compare_server_default": True,
    }
    if db.schemas:
        wanted = set(db.schemas)

        def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
            return type_ != "schema" or name in wanted

        options["include_schemas"] = True
        options["include_name"] = include_name
    return options


def _record_applied(ctx: MigrationContext, step: Any, heads: Any, run_args: Any) -> None:
    # Which revisions went through: a failure then names the one after the last of these.
    applied = ctx.config.attributes.setdefault("applied", []) if ctx.config else []
    applied.append(step.up_revision_id if step.is_upgrade else step.down_revision_ids)


def _run_online(connection: Connection, db: DatabaseConfig, tenant_schema: str | None) -> None:
    schema = tenant_schema or db.version_table_schema
    # Every migration connection waits at most lock_timeout for a lock (db_kit.migrations.locks).
    set_migration_timeouts(connection, db.settings())
    if db.version_table_schema and not tenant_schema:
        # The registry's own schema must exist before Alembic creates its version table.
        outside = not connection.in_transaction()
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{db.version_table_schema}"'))
        if outside:
            connection.commit()
    with migration_lock(connection, lock_key(db.version_table, schema)):
        context.configure(
            connection=connection,
            # A tenant's revisions run in the caller's one transaction (see SchemaTenantMigrator).
            transaction_per_migration=tenant_schema is None,
            process_revision_directives=_skip_empty,
            on_version_apply=_record_applied,
            **configure_options(db, tenant_schema),
        )
        with context.begin_transaction():
            context.run_migrations()


class NeedsConnectionError(Exception):
    """A revision asked for the connection or the migration context while being rendered
    to SQL (``render_upgrades``): it can only run online."""


def _refuse(name: str) -> Callable[..., NoReturn]:
    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise NeedsConnectionError(f"op.{name}()")

    return refuse


def render_upgrades(db: DatabaseConfig, dialect: Dialect, revisions: Sequence[Script]) -> list[str]:
    """Each revision's ``upgrade()`` rendered to SQL once, through Alembic's offline mode
    (``alembic upgrade --sql``) with ``dialect`` (a live connection's: the same compiler,
    quoting and server version as an online run), without schema: the statements act
    wherever ``search_path`` points. Version bookkeeping is not included.

    Raises when a revision cannot be rendered faithfully: it asks for ``op.get_bind()`` or
    ``op.get_context()`` (``NeedsConnectionError``), uses ``alembic.context`` (no
    environment here), or fails in any other way; such revisions run online.
    """
    buffer = io.StringIO()
    options = configure_options(db)
    options.update(
        as_sql=True,
        output_buffer=buffer,
        literal_binds=True,
        version_table_schema=None,
        transaction_per_migration=False,
    )
    ctx = MigrationContext.configure(dialect=dialect, opts=options)
    ops = Operations(ctx)
    # ``op`` while rendering: every operation, but no way to the connection or the context
    # (whatever reads the database, or branches on it, must run online).
    for name in ("get_bind", "get_context"):
        setattr(ops, name, _refuse(name))
    rendered: list[str] = []
    ops._install_proxy()
    try:
        for revision in revisions:
            revision.module.upgrade()
            rendered.append(buffer.getvalue().strip())
            buffer.seek(0)
            buffer.truncate()
    finally:
        ops._remove_proxy()
    return rendered


def render_version_table(dialect: Dialect, version_table: str) -> str:
    """``CREATE TABLE`` of Alembic's version table, without schema (Alembic's own
    ``version_table_impl`` for the dialect, with its primary key)."""
    ctx = MigrationContext.configure(
        dialect=dialect, opts={"as_sql": True, "output_buffer": io.StringIO()}
    )
    table = ctx.impl.version_table_impl(
        version_table=version_table, version_table_schema=None, version_table_pk=True
    )
    return str(CreateTable(table).compile(dialect=dialect)).strip() + ";"


def run_env(config_path: str) -> None:
    """Run the current Alembic command for the database described at ``config_path``."""
    cfg = context.config
    db: DatabaseConfig = cfg.attributes.get("database_config") or _import(config_path)
    if context.is_offline_mode():
        # Offline (--sql) needs only the dialect: no URL, no connection, no credentials.
        context.configure(
            url="postgresql+psycopg://",
            literal_binds=True,
            dialect_opts={"paramstyle": "named"},
            **configure_options(db),
        )
        settings = cfg.attributes.get("settings") or db.settings()
        # The script's first lines, before its BEGIN: the whole session runs with them.
        for statement in offline_timeouts_sql(settings):
            context.execute(statement)
        with context.begin_transaction():
            if db.version_table_schema:
                # As online: the stream's own schema before Alembic's version table.
                context.execute(f'CREATE SCHEMA IF NOT EXISTS "{db.version_table_schema}"')
            context.run_migrations()
        return
    handed: Connection | Engine | None = cfg.attributes.get("connection")
    tenant_schema: str | None = cfg.attributes.get("tenant_schema")
    if isinstance(handed, Connection):
        _run_online(handed, db, tenant_schema)
        return
    # pytest-alembic hands in an Engine; otherwise connect from the db lib's settings.
    engine = handed if isinstance(handed, Engine) else build_admin_engine(db.settings())
    try:
        with engine.connect() as conn:
            _run_online(conn, db, tenant_schema)
    finally:
        if handed is None:
            engine.dispose()
