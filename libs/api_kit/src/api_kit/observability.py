"""Request-side observability: correlation ids, log lines, ``/metrics``.

``CorrelationIdMiddleware`` takes the request id from ``X-Request-ID`` (or generates one
when absent or unsafe), sets it for the request's context (``db_shared.correlation``, which
db_kit prefixes to each statement as a SQL comment), returns it in the response header,
logs one line per request (with the tenant the request ran for) and counts it in
``http_requests_total`` / ``http_request_duration_seconds`` by route template.
``configure_logging`` gives every log record the id and tenant and, when the root logger
has no handler (uvicorn leaves it alone), adds one: plain text, or one JSON object a line
with ``LOG_FORMAT=json``. ``/metrics`` asks for ``Authorization: Bearer <METRICS_TOKEN>``
when that variable is set.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_kit.errors import problem
from db_shared.correlation import correlation_context, install_log_record_factory
from db_shared.tenancy import Tenant, current_tenant_or_none, tenant_context

REQUEST_ID_HEADER = "x-request-id"
LOG_FORMAT = (
    "%(asctime)s %(levelname)-7s %(name)s [request=%(correlation_id)s tenant=%(tenant)s] "
    "%(message)s"
)
request_log = logging.getLogger("api_kit.request")

HTTP_REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# Label values stay bounded: a path no route matches is one label, an unknown method another.
UNMATCHED_ROUTE = "<unmatched>"
OTHER_METHOD = "OTHER"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    """The path template of the route that served ``scope`` (``/gym/classes/{class_id}``).

    The router leaves the matched route in the scope (a partial match too: a 405); a path no
    route matches gives ``UNMATCHED_ROUTE``, never the raw path.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class _HttpMetrics:
    """The labelled children, cached: one dict lookup a request once a label set was seen."""

    __slots__ = ("_counters", "_timers")

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in _METHODS:
            method = OTHER_METHOD
        key = (method, route, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = HTTP_REQUESTS.labels(method, route, str(status))
        counter.inc()
        timer = self._timers.get(key[:2])
        if timer is None:
            timer = self._timers[key[:2]] = HTTP_SECONDS.labels(method, route)
        timer.observe(seconds)


_http_metrics = _HttpMetrics()


class CorrelationIdMiddleware:
    """Pure ASGI: the request's correlation id around the whole app (outermost middleware)."""

    def __init__(
        self, app: ASGIApp, header: str = REQUEST_ID_HEADER, log_level: int | None = None
    ) -> None:
        self.app = app
        self.header = header.lower()
        self.log_level = request_log_level() if log_level is None else log_level

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get(self.header)
        with correlation_context(incoming) as cid:
            status = 500
            # The tenant middleware (inside this one) resets its tenant before we log: the
            # tenant is taken while the response starts, which runs in the request's context.
            tenant: Tenant | None = None
            started = perf_counter()

            async def send_with_id(message: Message) -> None:
                nonlocal status, tenant
                if message["type"] == "http.response.start":
                    status = message["status"]
                    tenant = current_tenant_or_none()
                    MutableHeaders(scope=message).append("X-Request-ID", cid)
                await send(message)

            try:
                await self.app(scope, receive, send_with_id)
            finally:
                seconds = perf_counter() - started
                method = scope.get("method", "WS")
                if scope["type"] == "http":  # a WebSocket sends no status
                    _http_metrics.observe(method, route_template(scope), status, seconds)
                if request_log.isEnabledFor(self.log_level):
                    self._log(method, scope["path"], status, seconds, tenant)

    def _log(
        self, method: str, path: str, status: int, seconds: float, tenant: Tenant | None
    ) -> None:
        args = (method, path, status, seconds * 1000)
        if tenant is None:
            request_log.log(self.log_level, "%s %s -> %s in %.1f ms", *args)
            return
        with tenant_context(tenant):  # the record factory reads the current tenant
            request_log.log(self.log_level, "%s %s -> %s in %.1f ms", *args)


def request_log_level() -> int:
    """INFO in development (see each request), DEBUG elsewhere (uvicorn's access log already
    has a line per request; formatting and writing a second one costs ~0.05 ms)."""
    # Unset means production, as in db_kit's settings: development is chosen explicitly.
    environment = os.environ.get("ENVIRONMENT") or os.environ.get("APP_ENV") or "production"
    return logging.INFO if environment.lower() == "development" else logging.DEBUG


_HANDLER_MARK = "_api_kit_handler"
# What every LogRecord has; anything else on a record came with ``extra=`` and is kept.
# uvicorn's ``color_message`` repeats the message with terminal colours: left out too.
_ADDED_FIELDS = {"message", "asctime", "correlation_id", "tenant", "taskName", "color_message"}
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | _ADDED_FIELDS


class JsonFormatter(logging.Formatter):
    """One JSON object a line: timestamp (UTC, ISO 8601), level, logger, message,
    correlation_id, tenant, then any ``extra=`` fields and the exception's traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": getattr(record, "correlation_id", "-"),
            "tenant": getattr(record, "tenant", "-"),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def log_formatter() -> logging.Formatter:
    """``JsonFormatter`` with ``LOG_FORMAT=json``, else the text format (``LOG_FORMAT``)."""
    if (os.environ.get("LOG_FORMAT") or "text").strip().lower() == "json":
        return JsonFormatter()
    return logging.Formatter(LOG_FORMAT)


def configure_logging(level: int = logging.INFO) -> None:
    """Correlation id and tenant on every record; a stderr handler if the root has none.

    With ``LOG_FORMAT=json`` that handler writes JSON, and so do uvicorn's own handlers
    (its error and access logs), so every line of the process is one JSON object.
    """
    install_log_record_factory()
    formatter = log_formatter()
    if isinstance(formatter, JsonFormatter):
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            for uvicorn_handler in logging.getLogger(name).handlers:
                uvicorn_handler.setFormatter(formatter)
    root = logging.getLogger()
    if root.handlers:
        return  # the application configured logging itself: leave it
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    if root.level == logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(level)


def metrics_registry() -> CollectorRegistry:
    """The default registry, or every worker's samples under a multi-process server.

    Pre-fork servers (gunicorn with uvicorn workers) set ``PROMETHEUS_MULTIPROC_DIR`` so each
    worker writes its samples there; one scrape then reads them all.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


async def metrics(request: Request) -> Response:
    """Prometheus text format: http_requests_total, db_query_duration_seconds, ...

    With ``METRICS_TOKEN`` set, only ``Authorization: Bearer <token>`` gets them (401
    otherwise); unset, the endpoint is open (keep it off the public network).
    """
    token = os.environ.get("METRICS_TOKEN")
    if token:
        given = request.headers.get("authorization", "")
        scheme, _, credentials = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credentials.strip().encode(), token.encode()
        ):
            return problem(401, "unauthenticated", "/metrics needs its bearer token.")
    return Response(generate_latest(metrics_registry()), media_type=CONTENT_TYPE_LATEST)
