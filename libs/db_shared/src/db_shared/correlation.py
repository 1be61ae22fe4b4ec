"""The correlation id of the work in progress (an HTTP request, a job), context-local.

The API middleware sets it from the ``X-Request-ID`` header (or generates one); logging adds
it to every record and db_kit carries it into each statement as a SQL comment, so one id
ties a request's log lines to its queries in ``pg_stat_activity``.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from db_shared.tenancy import current_tenant_or_none

# What may travel into logs and SQL comments: no spaces, quotes or `*/`.
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "db_shared_correlation_id", default=None
)


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def safe_correlation_id(value: str | None) -> str:
    """``value`` when it is a safe id (letters, digits, ``._:-``, at most 128), else a new one."""
    if value and _SAFE.fullmatch(value):
        return value
    return new_correlation_id()


def current_correlation_id() -> str | None:
    return _current.get()


@contextmanager
def correlation_context(value: str | None = None) -> Iterator[str]:
    """Run a block under a correlation id (made safe, or generated when None)."""
    cid = safe_correlation_id(value)
    token = _current.set(cid)
    try:
        yield cid
    finally:
        _current.reset(token)


def install_log_record_factory() -> None:
    """Give every log record ``correlation_id`` and ``tenant`` attributes (``-`` when unset).

    A record factory rather than a filter: it reaches records of every logger, propagated
    or not, so any handler's format may use ``%(correlation_id)s``. Installed once.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_db_shared_correlation", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.correlation_id = _current.get() or "-"
        tenant = current_tenant_or_none()
        record.tenant = tenant.slug if tenant is not None else "-"
        return record

    factory._db_shared_correlation = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
