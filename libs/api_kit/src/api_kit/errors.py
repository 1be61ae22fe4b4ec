"""db_shared errors mapped to HTTP once, for every app."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from db_shared.errors import (
    CheckViolationError,
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    DuplicateEntryError,
    ForeignKeyViolationError,
    IntegrityViolationError,
    InvalidDataError,
    NotFoundError,
    NotNullViolationError,
    RetryableError,
)
from db_shared.tenancy import InvalidTenantError, UnknownTenantError

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


class ProblemError(Exception):
    """A domain refusal a service raises with its HTTP status (bad password, full class...)."""

    def __init__(self, status: int, code: str, detail: str, *, fields: tuple[str, ...] = ()):
        self.status = status
        self.code = code
        self.detail = detail
        self.fields = fields
        super().__init__(detail)


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    fields: tuple[str, ...] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, object] = {"code": code, "detail": detail}
    if fields:
        body["fields"] = list(fields)
    return JSONResponse(body, status_code=status, headers=headers)


def response_for(exc: Exception) -> JSONResponse:
    """The HTTP answer for a db_shared error (or a ProblemError)."""
    if isinstance(exc, ProblemError):
        return problem(exc.status, exc.code, exc.detail, fields=exc.fields)
    # Before NotFoundError: an unknown tenant is one; an invalid slug reveals nothing more.
    if isinstance(exc, UnknownTenantError | InvalidTenantError):
        return problem(404, "unknown_tenant", "No tenant is served at this address.")
    if isinstance(exc, DuplicateEntryError):
        fields = exc.columns
        named = ", ".join(fields) if fields else "a unique field"
        return problem(
            409, "duplicate", f"A record with this {named} already exists.", fields=fields
        )
    if isinstance(exc, NotFoundError):
        return problem(404, "not_found", str(exc))
    if isinstance(exc, ForeignKeyViolationError):
        detail = "The request refers to a record that does not exist or is still in use."
        return problem(409, "conflict", detail, fields=exc.columns)
    if isinstance(exc, CheckViolationError | NotNullViolationError):
        return problem(
            422, "invalid", "A value was refused by the database rules.", fields=exc.columns
        )
    if isinstance(exc, IntegrityViolationError):
        return problem(409, "conflict", str(exc), fields=exc.columns)
    if isinstance(exc, InvalidDataError):
        return problem(422, "invalid", "A value is out of range or malformed.")
    if isinstance(exc, RetryableError):
        return problem(409, "conflict", "A concurrent update won; retry the request.")
    if isinstance(exc, DatabaseUnavailableError):
        log.warning("database unavailable: %s", exc)
        return problem(
            503, "unavailable", "The database is unavailable; retry shortly.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )  # fmt: skip
    if isinstance(exc, ConfigurationError):
        log.error("configuration error: %s", exc)
        return problem(500, "misconfigured", "The service is misconfigured.")
    log.exception("unexpected database error", exc_info=exc)
    return problem(500, "database_error", "Unexpected database error.")


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
    """Register the mapping on ``app`` (both apps call this; nothing else maps errors)."""
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(DatabaseError, _handle)
    app.add_exception_handler(ProblemError, _handle)
