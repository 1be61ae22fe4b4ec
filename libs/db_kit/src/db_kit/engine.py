"""One factory that builds a database's async and sync engines from its settings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, TextClause, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker
from sqlalchemy.pool import NullPool

from db_kit.observability import cursor_factories, instrument
from db_kit.settings import DatabaseSettings, Environment


@dataclass(frozen=True)
class Engines:
    """Both engines of one database and their session makers."""

    url: URL
    async_engine: AsyncEngine
    sync_engine: Engine
    async_sessions: async_sessionmaker[AsyncSession]
    sync_sessions: sessionmaker[Session]
    # Whether async sessions record that they wrote (read-your-writes with replicas).
    tracks_writes: bool = False


def connect_args(
    settings: DatabaseSettings, *, prepare: bool = True, cursor_factory: type | None = None
) -> dict[str, Any]:
    """psycopg connection arguments: connect timeout, statement timeout, application name,
    and the cursor class (``observability.cursor_factories``) when one is given."""
    args: dict[str, Any] = {
        "connect_timeout": settings.connect_timeout,
        "application_name": settings.application_name,
    }
    if cursor_factory is not None:
        args["cursor_factory"] = cursor_factory
    if settings.pgbouncer or not prepare:
        # A transaction pooler hands each transaction to any server connection: a statement
        # prepared on one is missing (or clashes) on the next. With many tenant schemas
        # every tenant's SQL is a different text, and psycopg's 100-statement prepared
        # cache per connection only churns (bench/tenancy_sessions.py: 1.25x -> 1.05x).
        args["prepare_threshold"] = None
    if not settings.pgbouncer:
        args["options"] = f"-c statement_timeout={settings.statement_timeout_ms}"
    return args


def engine_kwargs(
    settings: DatabaseSettings,
    *,
    pooled: bool = True,
    prepare: bool = True,
    cursor_factory: type | None = None,
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "connect_args": connect_args(settings, prepare=prepare, cursor_factory=cursor_factory),
        "echo": settings.echo,
        # Bound parameters carry password hashes, token digests and emails: kept out of the
        # statement log, echo and exception text ("[SQL parameters hidden ...]") in every
        # environment unless <PREFIX>LOG_SQL_PARAMETERS opts in.
        "hide_parameters": not settings.log_sql_parameters,
    }
    if pooled:
        kwargs.update(
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout,
            pool_recycle=settings.pool_recycle,
            pool_pre_ping=settings.pool_pre_ping,
        )
    else:
        kwargs["poolclass"] = NullPool
    return kwargs


# ``session.info`` key set when a unit of work wrote (``WriteTrackingSession``).
WROTE = "db_kit_wrote"


class WriteTrackingSession(Session):
    """A session that notes in ``info[WROTE]`` that it flushed or ran a statement other than
    a SELECT (Core inserts/updates/deletes and text included), so a unit of work knows
    whether to record the primary's WAL position for read-your-writes. Used only when the
    database has replicas: the ORM-execute hook costs a few microseconds per statement."""


@event.listens_for(WriteTrackingSession, "after_flush")
def _flushed(session: Session, flush_context: object) -> None:
    session.info[WROTE] = True


_READ_TEXT = ("SELECT", "SHOW", "EXPLAIN")


@event.listens_for(WriteTrackingSession, "do_orm_execute")
def _executed(state: ORMExecuteState) -> None:
    if state.is_select:
        return
    statement = state.statement
    if isinstance(statement, TextClause) and statement.text.lstrip().upper().startswith(_READ_TEXT):
        return  # text("SELECT ..."): a read (a SELECT of a function that writes is not seen)
    state.session.info[WROTE] = True


SCHEMA_RENDER_CACHE = 20_000


def cache_schema_translation(engine: Engine) -> None:
    """Memoise the per-execution schema translation of ``engine``'s dialect.

    With ``schema_translate_map`` SQLAlchemy compiles a statement once, with placeholders, and
    on every execution rewrites that cached string with a regular expression (about as long
    as db_kit's whole tenant routing: bench/tenancy_sessions.py). The result depends only on
    the cached string and the map, so it is kept, bounded, per engine. The hook is
    SQLAlchemy's ``IdentifierPreparer._render_schema_translates``; if a release renames it,
    this does nothing and translation stays correct, only slower.
    """
    preparer = engine.dialect.identifier_preparer
    base = type(preparer)
    render = getattr(base, "_render_schema_translates", None)
    if render is None or getattr(base, "_db_kit_cached", False):
        return
    rendered: dict[tuple[str, tuple[tuple[Any, str], ...]], str] = {}

    def _render_schema_translates(self: Any, statement: str, schema_translate_map: Any) -> str:
        key = (statement, tuple(schema_translate_map.items()))
        found = rendered.get(key)
        if found is None:
            found = render(self, statement, schema_translate_map)
            if len(rendered) >= SCHEMA_RENDER_CACHE:
                rendered.clear()
            rendered[key] = found
        return found

    # A subclass per engine: the compiler copies the preparer per translate map with
    # ``self.__class__``, so the copies keep the cache.
    preparer.__class__ = type(
        base.__name__,
        (base,),
        {"_render_schema_translates": _render_schema_translates, "_db_kit_cached": True},
    )


def build_engines(
    settings: DatabaseSettings,
    url: URL | None = None,
    *,
    prepare: bool = True,
    name: str | None = None,
    sync_settings: DatabaseSettings | None = None,
    cursors: tuple[type, type] | None = None,
    each_engine: Callable[[Engine], None] | None = None,
    track_writes: bool = False,
) -> Engines:
    """Create (but do not connect) the engines of one database: the one engine factory.

    ``url`` defaults to the settings' URL (``resolved_url``: never starts a server).
    ``name`` labels the engines' metrics (default: the URL's database name); ``cursors``
    (sync, async) replaces the cursor classes built for that label. ``sync_settings``
    sizes the sync pool apart from the async one, and ``each_engine`` is called with both
    sync engines (the tenant engine cache watches their connections this way).
    ``track_writes`` makes async sessions ``WriteTrackingSession``s (databases with replicas).
    """
    target = url if url is not None else settings.resolved_url()
    cursor, async_cursor = cursors or cursor_factories(name or target.database or "?", settings)
    async_engine = create_async_engine(
        target, **engine_kwargs(settings, prepare=prepare, cursor_factory=async_cursor)
    )
    sync_engine = create_engine(
        target, **engine_kwargs(sync_settings or settings, prepare=prepare, cursor_factory=cursor)
    )
    for engine in (async_engine.sync_engine, sync_engine):
        if each_engine is not None:
            each_engine(engine)
        cache_schema_translation(engine)
        instrument(engine, settings=settings)
    return Engines(
        url=target,
        async_engine=async_engine,
        sync_engine=sync_engine,
        async_sessions=(
            async_sessionmaker(
                async_engine, expire_on_commit=False, sync_session_class=WriteTrackingSession
            )
            if track_writes
            else async_sessionmaker(async_engine, expire_on_commit=False)
        ),
        sync_sessions=sessionmaker(sync_engine, expire_on_commit=False),
        tracks_writes=track_writes,
    )


def build_admin_engine(settings: DatabaseSettings, url: URL | None = None) -> Engine:
    """A pool-less sync engine for migrations and one-off CLI work."""
    target = url if url is not None else settings.resolved_url()
    return create_engine(target, **engine_kwargs(settings, pooled=False))


_SQL_LOG_LEVEL = {
    Environment.DEVELOPMENT: logging.INFO,  # statements, through the app's log handlers
    Environment.TEST: logging.WARNING,
    Environment.PRODUCTION: logging.ERROR,
}


def configure_sql_logging(settings: DatabaseSettings) -> None:
    """SQL logging by environment: queries in development, errors only in production (and
    when ENVIRONMENT is unset). Never parameters: see ``engine_kwargs``.

    Process-wide (SQLAlchemy's loggers): an app's or a tool's entry point calls it; building
    engines never does.
    """
    logging.getLogger("sqlalchemy.engine.Engine").setLevel(_SQL_LOG_LEVEL[settings.environment])
    logging.getLogger("sqlalchemy.pool").setLevel(
        logging.WARNING if settings.environment is not Environment.PRODUCTION else logging.ERROR
    )
