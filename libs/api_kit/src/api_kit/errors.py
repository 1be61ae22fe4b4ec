"""Errors mapped to HTTP once, for every app: one table, one body shape (RFC 9457).

Every error answer is ``application/problem+json``::

    {"type": "https://errors.data-layer.dev/duplicate", "title": "Conflict", "status": 409,
     "detail": "A record with this email already exists.", "code": "duplicate",
     "fields": ["email"]}

``code`` is the stable, machine-readable name clients switch on; ``type`` is that code as a
URI (``PROBLEM_TYPE_BASE`` + code: one problem type per code, as RFC 9457 asks, rather than
``about:blank``, which would say the status alone is the meaning); ``title`` is the status
phrase; ``fields`` names the request fields at fault, when some are. A 422 for an invalid
request adds ``errors`` (location, message and type per fault; never the input).

Database errors (``db_shared.errors.DatabaseError``) get a public code and detail chosen
here, so no SQL or connection detail leaks. Domain refusals (``db_shared.errors.DomainError``)
bring their own code, detail and fields; this table only decides their status.
Framework errors (unknown route, wrong method, unparseable or too large body, a crash) get
the same shape from the handlers ``install_error_handlers`` registers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from db_shared.errors import (
    CheckViolationError,
    ConfigurationError,
    ConflictError,
    DatabaseError,
    DatabaseUnavailableError,
    DomainError,
    DuplicateEntryError,
    ForbiddenError,
    ForeignKeyViolationError,
    IntegrityViolationError,
    InvalidDataError,
    InvalidInputError,
    NotFoundError,
    NotNullViolationError,
    RateLimitedError,
    ResourceNotFoundError,
    RetryableError,
    UnauthenticatedError,
)
from db_shared.tenancy import (
    InvalidTenantError,
    TenantFrozenError,
    TenantMovedError,
    UnknownTenantError,
)

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://errors.data-layer.dev/"
RETRY_AFTER_SECONDS = 5
MAX_REPORTED_ERRORS = 50

Text = str | Callable[[Exception], str]


class ValidationIssue(BaseModel):
    """One fault of an invalid request: where (``["body", "email"]``), what, and its kind."""

    loc: list[str]
    msg: str
    type: str


class Problem(BaseModel):
    """The body of every error answer (RFC 9457 problem details, plus ``code``/``fields``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "type": f"{PROBLEM_TYPE_BASE}duplicate",
                "title": "Conflict",
                "status": 409,
                "detail": "A record with this email already exists.",
                "code": "duplicate",
                "fields": ["email"],
            }
        }
    )

    type: str = Field(description=f"The problem type: {PROBLEM_TYPE_BASE}<code>")
    title: str = Field(description="The HTTP status phrase")
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="For people; never echoes the input")
    code: str = Field(description="Stable machine-readable code")
    fields: list[str] = Field(
        default_factory=list, description="Request fields at fault, when some are"
    )
    errors: list[ValidationIssue] = Field(
        default_factory=list, description="Each fault of an invalid request (422)"
    )


def _columns(exc: Exception) -> tuple[str, ...]:
    return exc.columns if isinstance(exc, IntegrityViolationError) else ()


def _duplicate_detail(exc: Exception) -> str:
    named = ", ".join(_columns(exc)) or "a unique field"
    return f"A record with this {named} already exists."


@dataclass(frozen=True)
class Answer:
    """How one kind of error is answered: its status, and code/detail unless it brings them."""

    status: int
    code: str | None = None  # None: the error's own code (domain errors)
    detail: Text | None = None  # None: the error's own detail (domain errors)
    fields: Callable[[Exception], tuple[str, ...]] | None = None
    retry_after: bool = False  # Retry-After: the error's ``retry_after`` or the default
    log: tuple[int, str] | None = None  # level and words of the server-side log line


# The one table, most specific first (the first matching row answers). An unknown tenant
# is a NotFoundError, and an invalid slug gets the same answer so nothing more is revealed.
ERROR_ANSWERS: tuple[tuple[type[Exception] | tuple[type[Exception], ...], Answer], ...] = (
    (
        (UnknownTenantError, InvalidTenantError),
        Answer(404, "unknown_tenant", "No tenant is served at this address."),
    ),
    (DuplicateEntryError, Answer(409, "duplicate", _duplicate_detail, fields=_columns)),
    (NotFoundError, Answer(404, "not_found", str)),
    (
        ForeignKeyViolationError,
        Answer(
            409,
            "conflict",
            "The request refers to a record that does not exist or is still in use.",
            fields=_columns,
        ),
    ),
    (
        (CheckViolationError, NotNullViolationError),
        Answer(422, "invalid", "A value was refused by the database rules.", fields=_columns),
    ),
    (IntegrityViolationError, Answer(409, "conflict", str, fields=_columns)),
    (InvalidDataError, Answer(422, "invalid", "A value is out of range or malformed.")),
    (
        TenantFrozenError,
        Answer(
            503,
            "tenant_moving",
            "This tenant's data is moving; writes resume within a second. Retry.",
            retry_after=True,
            log=(logging.INFO, "tenant frozen for a move"),
        ),
    ),
    (
        TenantMovedError,
        Answer(
            503,
            "tenant_moved",
            "This tenant's data has just moved; retry the request.",
            retry_after=True,
            log=(logging.INFO, "tenant moved"),
        ),
    ),
    (RetryableError, Answer(409, "conflict", "A concurrent update won; retry the request.")),
    (
        DatabaseUnavailableError,
        Answer(
            503,
            "unavailable",
            "The database is unavailable; retry shortly.",
            retry_after=True,
            log=(logging.WARNING, "database unavailable"),
        ),
    ),
    (
        ConfigurationError,
        Answer(
            500,
            "misconfigured",
            "The service is misconfigured.",
            log=(logging.ERROR, "configuration error"),
        ),
    ),
    # Domain refusals: the service chose code, detail and fields; only the status is here.
    (ResourceNotFoundError, Answer(404)),
    (ConflictError, Answer(409)),
    (ForbiddenError, Answer(403)),
    (UnauthenticatedError, Answer(401)),
    (InvalidInputError, Answer(422)),
    (RateLimitedError, Answer(429, retry_after=True)),
)
UNEXPECTED = Answer(500, "database_error", "Unexpected database error.")
UNEXPECTED_REFUSAL = Answer(400)  # a DomainError subclass the table does not list

# Headers some statuses always carry (RFC 9110: a 401 names its scheme).
STATUS_HEADERS: Mapping[int, Mapping[str, str]] = {401: {"WWW-Authenticate": "Bearer"}}

# Codes of the answers the framework gives (no db_shared error behind them).
FRAMEWORK_CODES: Mapping[int, tuple[str, str]] = {
    400: ("malformed_body", "The request body could not be parsed."),
    404: ("not_found", "Nothing is served at this path."),
    405: ("method_not_allowed", "This method is not allowed here; see the Allow header."),
    413: ("too_large", "The request body is too large."),
    500: ("internal_error", "An unexpected error occurred."),
}


def answer_for(exc: Exception) -> Answer:
    """The row of ``ERROR_ANSWERS`` that answers ``exc``."""
    for kinds, answer in ERROR_ANSWERS:
        if isinstance(exc, kinds):
            return answer
    return UNEXPECTED_REFUSAL if isinstance(exc, DomainError) else UNEXPECTED


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    fields: tuple[str, ...] | list[str] = (),
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """The error answer every app gives: an ``application/problem+json`` ``Problem``."""
    body: dict[str, object] = {
        "type": f"{PROBLEM_TYPE_BASE}{code}",
        "title": _title(status),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if fields:
        body["fields"] = list(fields)
    if extra:
        body.update(extra)
    all_headers = {**STATUS_HEADERS.get(status, {}), **(headers or {})}
    return JSONResponse(
        body, status_code=status, headers=all_headers or None, media_type=PROBLEM_MEDIA_TYPE
    )


def framework_problem(status: int, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The answer for a status the framework decides (404 route, 405, 413, 400 body...)."""
    code, detail = FRAMEWORK_CODES.get(
        status, (_title(status).lower().replace(" ", "_").replace("-", "_"), _title(status))
    )
    return problem(status, code, detail, headers=headers)


def response_for(exc: Exception) -> JSONResponse:
    """The HTTP answer for a db_shared database error or domain refusal."""
    answer = answer_for(exc)
    if answer is UNEXPECTED:
        log.exception("unexpected database error", exc_info=exc)
    elif answer.log is not None:
        level, words = answer.log
        log.log(level, "%s: %s", words, exc)
    if isinstance(exc, DomainError):
        code, detail, fields = exc.code, exc.detail, exc.fields
    else:
        code, detail, fields = "", "", ()
    if answer.code is not None:
        code = answer.code
    if answer.detail is not None:
        detail = answer.detail if isinstance(answer.detail, str) else answer.detail(exc)
    if answer.fields is not None:
        fields = answer.fields(exc)
    headers = None
    if answer.retry_after:
        seconds = getattr(exc, "retry_after", None) or RETRY_AFTER_SECONDS
        headers = {"Retry-After": str(seconds)}
    return problem(answer.status, code, detail, fields=fields, headers=headers)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    return response_for(exc)


def _field_of(loc: Sequence[str]) -> str | None:
    # ["body", "email"] -> "email"; ["path", "user_id"] -> "user_id"; ["body"] -> None
    names = [part for part in loc[1:] if not part.isdigit()]
    return names[0] if names else None


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's default handler echoes every rejected input back: a 20 MB string comes back
    # whole, and an input JSON cannot encode (a lone surrogate, NaN) turns a 422 into a 500.
    assert isinstance(exc, RequestValidationError)
    raw = exc.errors()
    if any(err.get("type") == "json_invalid" for err in raw):
        return framework_problem(400)  # not JSON at all: unparseable, not invalid
    errors = [
        {"loc": [str(part) for part in err.get("loc", ())], "msg": str(err.get("msg", "")),
         "type": str(err.get("type", ""))}
        for err in raw[:MAX_REPORTED_ERRORS]
    ]  # fmt: skip
    fields = list(dict.fromkeys(f for err in errors if (f := _field_of(err["loc"]))))
    return problem(
        422,
        "invalid_request",
        "The request is not valid; see errors.",
        fields=fields,
        extra={"errors": errors},
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app serves at this request's path."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):  # included routers' routes too
        route_methods = route.methods
        if route_methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= set(route_methods)
    return sorted(methods)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return framework_problem(exc.status_code, headers)


async def _crash(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's ServerErrorMiddleware logs the traceback and re-raises after this answer.
    return framework_problem(500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping on ``app`` (``create_api`` calls this; nothing else maps errors)."""
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DatabaseError, _handle)
    app.add_exception_handler(DomainError, _handle)
    app.add_exception_handler(Exception, _crash)


__all__ = [
    "ERROR_ANSWERS",
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_TYPE_BASE",
    "Answer",
    "Problem",
    "answer_for",
    "framework_problem",
    "install_error_handlers",
    "problem",
    "response_for",
]
