"""Query hooks in one place, in every engine db_kit builds (psycopg cursor classes).

- Prometheus: ``db_query_duration_seconds{database,tenant}`` (a histogram: its ``_count``
  is the number of statements, ``_sum`` their time), ``db_query_errors_total`` and
  ``db_slow_queries_total`` (exported by the apps at ``/metrics``).
- A slow-query log (logger ``db_kit.slow_query``, WARNING) above ``<PREFIX>SLOW_QUERY_MS``;
  the statement is logged, its parameters never are.
- The correlation id of the current request or job (``db_shared.correlation``) prefixed to
  each statement as ``/* request_id=... */`` so it shows in ``pg_stat_activity.query``
  (``<PREFIX>SQL_COMMENTS=false`` turns it off).
- OpenTelemetry spans per statement when ``opentelemetry-instrumentation-sqlalchemy`` is
  installed (``db-kit[otel]``), a tracer provider is configured by the time the engine is
  built (engines are built on first use), and ``<PREFIX>OPENTELEMETRY`` is not false.

Costs, measured on this machine: these hooks ~5 us a statement; OpenTelemetry's ~25 us
(plus SQLAlchemy's event dispatch, which its listeners switch on). A SQL comment makes each
request's statements distinct, so none of them can be prepared: ~100-170 us of client CPU
on ``GET /auth/me``'s one query (bench/current_user.py), plus parsing and planning on the
server. To keep that down the comment is added to psycopg's already converted query (its
placeholder conversion stays cached by the statement's text) and the statement is sent
unprepared at once (no entry in psycopg's prepared-statement counts, which a new text per
request would churn for every other statement); where psycopg lacks the hook
(``_convert_query``) the comment is prefixed to the text as before.

The tenant label is the current tenant's slug (``-`` outside a tenant).
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import TYPE_CHECKING, Any

import psycopg
from prometheus_client import Counter, Histogram

from db_shared.correlation import current_correlation_id
from db_shared.tenancy import current_tenant_or_none

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from db_kit.settings import DatabaseSettings

QUERY_ERRORS = Counter(
    "db_query_errors",
    "SQL statements that raised, by database and tenant.",
    ["database", "tenant"],
)
QUERY_SECONDS = Histogram(
    "db_query_duration_seconds",
    "SQL statements (count) and the time from sending each to its result, by database and tenant.",
    ["database", "tenant"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SLOW_QUERIES = Counter(
    "db_slow_queries",
    "SQL statements slower than the slow-query threshold, by database and tenant.",
    ["database", "tenant"],
)

slow_query_log = logging.getLogger("db_kit.slow_query")
STATEMENT_SHOWN = 2000  # characters of a slow statement kept in the log
_INSTRUMENTED = "_db_kit_observed"


class _Series:
    """One database's metric children by tenant (``labels()`` costs a lock and a lookup)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self._by_tenant: dict[str, tuple[Any, Any, Any]] = {}

    def of(self, tenant: str) -> tuple[Any, Any, Any]:
        found = self._by_tenant.get(tenant)
        if found is None:
            found = (
                QUERY_SECONDS.labels(self.database, tenant),
                QUERY_ERRORS.labels(self.database, tenant),
                SLOW_QUERIES.labels(self.database, tenant),
            )
            self._by_tenant[tenant] = found
        return found


def _tenant_label() -> str:
    tenant = current_tenant_or_none()
    return tenant.slug if tenant is not None else "-"


class _Observer:
    """What every statement of one database goes through: comment, time, count, slow log."""

    def __init__(self, database: str, settings: DatabaseSettings) -> None:
        self.database = database
        self.series = _Series(database)
        self.slow = settings.slow_query_ms / 1000 if settings.slow_query_ms > 0 else None
        self.comments = settings.sql_comments

    def comment(self, query: Any) -> str | None:
        """``/* request_id=... */ `` for ``query`` when it gets one, else None."""
        # Not the pool's pre-ping (";"): a comment would only make it a new text to psycopg.
        if self.comments and isinstance(query, str) and query != ";":
            cid = current_correlation_id()
            if cid is not None:  # made safe (no `*/`, quotes or spaces) when it was set
                return f"/* request_id={cid} */ "
        return None

    def finished(self, query: Any, started: float, comment: str | None = None) -> None:
        elapsed = perf_counter() - started
        tenant = _tenant_label()
        seconds, _, slow_count = self.series.of(tenant)
        seconds.observe(elapsed)
        if self.slow is not None and elapsed >= self.slow:
            slow_count.inc()
            text = str(query) if comment is None else comment + str(query)
            shown = text if len(text) <= STATEMENT_SHOWN else text[:STATEMENT_SHOWN] + " ..."
            slow_query_log.warning(
                "slow query: %.0f ms on %s (tenant %s): %s",
                elapsed * 1000,
                self.database,
                tenant,
                shown,
                extra={"duration_ms": round(elapsed * 1000, 1), "database": self.database},
            )

    def failed(self, started: float) -> None:
        seconds, failed, _ = self.series.of(_tenant_label())
        failed.inc()
        seconds.observe(perf_counter() - started)


# psycopg converts a query's placeholders once per text (cached) in this cursor method; a
# comment added to its result leaves that cache working. Private: without it, the comment
# is prefixed to the text (correct, only slower).
_CONVERT_HOOK = hasattr(psycopg.Cursor, "_convert_query") and hasattr(
    psycopg.AsyncCursor, "_convert_query"
)


def _commented(
    cursor: Any, query: Any, comment: str | None, kwargs: dict[str, Any] | None = None
) -> Any:
    """What to hand psycopg for ``query`` with ``comment``: the query itself with the
    comment left for ``_convert_query``, or the commented text. An ``execute`` (``kwargs``)
    of a commented statement is never prepared (``prepare=False``): its text is new every
    request (``executemany`` has no such option; it prepares nothing by count alone)."""
    if comment is None:
        return query
    if kwargs is not None:
        kwargs["prepare"] = False
    if _CONVERT_HOOK:
        cursor._db_kit_comment = comment.encode()
        return query
    return comment + query


def cursor_factories(
    database: str, settings: DatabaseSettings
) -> tuple[type[psycopg.Cursor[Any]], type[psycopg.AsyncCursor[Any]]]:
    """psycopg cursor classes (sync, async) that observe every statement of ``database``.

    Passed as psycopg's ``cursor_factory`` (engine ``connect_args``) rather than hooked on
    SQLAlchemy's ``before/after_cursor_execute`` events: an engine with listeners takes
    SQLAlchemy's event-dispatching path on every connection, transaction and statement,
    which cost ~0.05 ms a request in the apps; a cursor subclass costs one extra call.
    """
    observer = _Observer(database, settings)

    class ObservedCursor(psycopg.Cursor[Any]):
        _db_kit_comment: bytes | None = None

        if _CONVERT_HOOK:

            def _convert_query(self, query: Any, params: Any = None) -> Any:
                pgq = super()._convert_query(query, params)
                if self._db_kit_comment is not None:
                    pgq.query = self._db_kit_comment + pgq.query
                return pgq

        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            comment = observer.comment(query)
            sent = _commented(self, query, comment, kwargs)
            started = perf_counter()
            try:
                result = super().execute(sent, params, **kwargs)
            except Exception:
                observer.failed(started)
                raise
            finally:
                self._db_kit_comment = None
            observer.finished(query, started, comment)
            return result

        def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
            comment = observer.comment(query)
            sent = _commented(self, query, comment)
            started = perf_counter()
            try:
                super().executemany(sent, params_seq, **kwargs)
            except Exception:
                observer.failed(started)
                raise
            finally:
                self._db_kit_comment = None
            observer.finished(query, started, comment)

    class ObservedAsyncCursor(psycopg.AsyncCursor[Any]):
        _db_kit_comment: bytes | None = None

        if _CONVERT_HOOK:

            def _convert_query(self, query: Any, params: Any = None) -> Any:
                pgq = super()._convert_query(query, params)
                if self._db_kit_comment is not None:
                    pgq.query = self._db_kit_comment + pgq.query
                return pgq

        async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            comment = observer.comment(query)
            sent = _commented(self, query, comment, kwargs)
            started = perf_counter()
            try:
                result = await super().execute(sent, params, **kwargs)
            except Exception:
                observer.failed(started)
                raise
            finally:
                self._db_kit_comment = None
            observer.finished(query, started, comment)
            return result

        async def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
            comment = observer.comment(query)
            sent = _commented(self, query, comment)
            started = perf_counter()
            try:
                await super().executemany(sent, params_seq, **kwargs)
            except Exception:
                observer.failed(started)
                raise
            finally:
                self._db_kit_comment = None
            observer.finished(query, started, comment)

    return ObservedCursor, ObservedAsyncCursor


def instrument(engine: Engine, *, settings: DatabaseSettings) -> None:
    """OpenTelemetry spans for ``engine`` (a sync Engine or an AsyncEngine's ``sync_engine``)
    when enabled and available; idempotent per engine. Metrics, comments and the slow-query
    log come from the cursor classes (``cursor_factories``)."""
    if getattr(engine, _INSTRUMENTED, False):
        return
    setattr(engine, _INSTRUMENTED, True)
    if settings.opentelemetry:
        _trace_with_opentelemetry(engine)


def _trace_with_opentelemetry(engine: Engine) -> bool:
    """Spans per statement through OpenTelemetry's SQLAlchemy instrumentation, if installed.

    Only when a tracer provider is configured (``trace.set_tracer_provider``, or the
    ``opentelemetry-instrument`` launcher) before the engine is built. The instrumentor's
    ``SQLAlchemyInstrumentor().instrument()`` can run once per process and wraps
    ``create_engine`` at module level; engines are built lazily here, so each one gets its
    own ``EngineTracer`` on the global (proxy) tracer provider instead.
    """
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    except ImportError:
        return False
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # No SDK configured: every span would be dropped, at ~25 us a statement.
        return False
    tracer = trace.get_tracer("db_kit")
    usage = metrics.get_meter("db_kit").create_up_down_counter(
        name="db.client.connections.usage",
        unit="connections",
        description="Connections in the state described by the state attribute.",
    )
    EngineTracer(tracer, engine, usage)  # type: ignore[no-untyped-call]
    return True
