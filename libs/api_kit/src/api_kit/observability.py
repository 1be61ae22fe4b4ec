"""Request-side observability: correlation ids, log lines, ``/metrics``.

``CorrelationIdMiddleware`` takes the request id from ``X-Request-ID`` (or generates one
when absent or unsafe), sets it for the request's context (``db_shared.correlation``, which
db_kit prefixes to each statement as a SQL comment), returns it in the response header
and logs one line per request. ``configure_logging`` gives every log record the id and
tenant and, when the root logger has no handler (uvicorn leaves it alone), adds one.
"""

from __future__ import annotations

import logging
import os
from time import perf_counter

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db_shared.correlation import correlation_context, install_log_record_factory

REQUEST_ID_HEADER = "x-request-id"
LOG_FORMAT = (
    "%(asctime)s %(levelname)-7s %(name)s [request=%(correlation_id)s tenant=%(tenant)s] "
    "%(message)s"
)
request_log = logging.getLogger("api_kit.request")


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
            started = perf_counter()

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    MutableHeaders(scope=message).append("X-Request-ID", cid)
                await send(message)

            try:
                await self.app(scope, receive, send_with_id)
            finally:
                request_log.log(
                    self.log_level,
                    "%s %s -> %s in %.1f ms",
                    scope.get("method", "WS"),
                    scope["path"],
                    status,
                    (perf_counter() - started) * 1000,
                )


def request_log_level() -> int:
    """INFO in development (see each request), DEBUG elsewhere (uvicorn's access log already
    has a line per request; formatting and writing a second one costs ~0.05 ms)."""
    # Unset means production, as in db_kit's settings: development is chosen explicitly.
    environment = os.environ.get("ENVIRONMENT") or os.environ.get("APP_ENV") or "production"
    return logging.INFO if environment.lower() == "development" else logging.DEBUG


_HANDLER_MARK = "_api_kit_handler"


def configure_logging(level: int = logging.INFO) -> None:
    """Correlation id and tenant on every record; a stderr handler if the root has none."""
    install_log_record_factory()
    root = logging.getLogger()
    if root.handlers:
        return  # the application configured logging itself: leave it
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
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
    """Prometheus text format: db_query_duration_seconds, db_query_errors_total, ..."""
    return Response(generate_latest(metrics_registry()), media_type=CONTENT_TYPE_LATEST)
