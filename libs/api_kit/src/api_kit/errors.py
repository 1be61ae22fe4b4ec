"""Errors mapped to HTTP once, for every app: one table for database and domain errors.

Database errors (``db_shared.errors.DatabaseError``) get a public code and detail chosen
here, so no SQL or connection detail leaks. Domain refusals (``db_shared.errors.DomainError``)
bring their own code, detail and fields; this table only decides their status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

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
    ResourceNotFoundError,
    RetryableError,
    UnauthenticatedError,
)
from db_shared.tenancy import InvalidTenantError, UnknownTenantError

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5

Text = str | Callable[[Exception], str]


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
    retry_after: bool = False
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
)
UNEXPECTED = Answer(500, "database_error", "Unexpected database error.")
UNEXPECTED_REFUSAL = Answer(400)  # a DomainError subclass the table does not list


def answer_for(exc: Exception) -> Answer:
    """The row of ``ERROR_ANSWERS`` that answers ``exc``."""
    for kinds, answer in ERROR_ANSWERS:
        if isinstance(exc, kinds):
            return answer
    return UNEXPECTED_REFUSAL if isinstance(exc, DomainError) else UNEXPECTED


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    fields: tuple[str, ...] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON error body every app answers: ``{"code", "detail", "fields"?}``."""
    body: dict[str, object] = {"code": code, "detail": detail}
    if fields:
        body["fields"] = list(fields)
    return JSONResponse(body, status_code=status, headers=headers)


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
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if answer.retry_after else None
    return problem(answer.status, code, detail, fields=fields, headers=headers)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    return response_for(exc)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's default handler echoes every rejected input back: a 20 MB string comes back
    # whole, and an input JSON cannot encode (a lone surrogate, NaN) turns a 422 into a 500.
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": [str(part) for part in err.get("loc", ())], "msg": str(err.get("msg", "")),
         "type": str(err.get("type", ""))}
        for err in exc.errors()[:50]
    ]  # fmt: skip
    body: dict[str, object] = {
        "code": "invalid_request",
        "detail": "The request is not valid; see errors.",
        "errors": errors,
    }
    return JSONResponse(body, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping on ``app`` (``create_api`` calls this; nothing else maps errors)."""
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(DatabaseError, _handle)
    app.add_exception_handler(DomainError, _handle)


__all__ = [
    "ERROR_ANSWERS",
    "Answer",
    "answer_for",
    "install_error_handlers",
    "problem",
    "response_for",
]
