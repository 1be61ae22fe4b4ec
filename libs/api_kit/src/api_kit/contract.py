"""The HTTP contract ``create_api`` gives every app: the body limit, operation ids, and an
OpenAPI document that declares every error an operation can answer, as a ``Problem``.

Which errors an operation declares is read from what it is made of, so a new route needs
nothing: a body can be unparseable (400) or too large (413); any input can be invalid (422);
the bearer dependency (any ``fastapi.security`` scheme) can refuse (401, 403); the database
dependency can miss a record or a tenant (404), refuse a write (409, on writing methods)
and be unreachable (503). An operation adds what only its code knows as route metadata,
e.g. ``@router.post("/login", responses={401: {...}, 429: {...}})``: any 4xx/5xx it lists
without a body is given the ``Problem`` body here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security.base import SecurityBase
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_kit.deps import is_database_dependency
from api_kit.errors import PROBLEM_MEDIA_TYPE, Problem, framework_problem

PROBLEM_REF = "#/components/schemas/Problem"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

DESCRIPTIONS = {
    400: "The body is not parseable JSON (`malformed_body`)",
    401: "Missing, invalid or expired credentials (`WWW-Authenticate: Bearer`)",
    403: "The caller may not do this",
    404: "No such record, or no tenant at this address",
    409: "The request conflicts with the current state",
    413: "The body is larger than the app accepts (`too_large`)",
    422: "The request is not valid (`invalid_request`, with `errors`)",
    429: "Too many attempts (`Retry-After`)",
    503: "The database is unavailable (`Retry-After`)",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}


# --- operation ids --------------------------------------------------------------------------


def _kebab(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def operation_id(route: Any) -> str:
    """``<tag or first path segment>-<function name>`` in kebab-case: ``auth-register``."""
    segments = [s for s in route.path_format.split("/") if s and not s.startswith("{")]
    group = _kebab(str(route.tags[0]) if route.tags else (segments[0] if segments else "root"))
    name = _kebab(route.name)
    if name == group or name.startswith(f"{group}-"):
        return name
    return f"{group}-{name}"


# --- declared responses ---------------------------------------------------------------------


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def problem_statuses(route: Any) -> set[int]:
    """The error statuses an operation (an ``APIRoute`` or FastAPI's route context) can
    answer, read from its inputs and dependencies."""
    parts = list(_dependants(route.dependant))
    calls = [part.call for part in parts]
    has_body = route.body_field is not None
    has_input = has_body or any(
        part.path_params or part.query_params or part.header_params or part.cookie_params
        for part in parts
    )
    statuses: set[int] = set()
    if has_body:
        statuses |= {400, 413}
    if has_input:
        statuses.add(422)
    if any(isinstance(call, SecurityBase) for call in calls):
        statuses |= {401, 403}
    if any(is_database_dependency(call) for call in calls):
        statuses |= {404, 503}
        if route.methods & WRITES:
            statuses.add(409)
    return statuses


def problem_response(status: int, description: str | None = None) -> dict[str, Any]:
    """An OpenAPI response whose body is a ``Problem`` (with the headers the status carries)."""
    response: dict[str, Any] = {
        "description": description or DESCRIPTIONS.get(status, "Error"),
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
    }
    if status in (429, 503):
        response["headers"] = RETRY_AFTER
    elif status == 401:
        response["headers"] = WWW_AUTHENTICATE
    return response


def problems(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """Route metadata for the errors only the operation's code knows, e.g.
    ``@router.post("/login", responses=problems(401, 429))``; each gets the Problem body.
    ``descriptions`` by status as ``_401="..."``.
    """
    return {
        status: {"description": descriptions.get(f"_{status}", DESCRIPTIONS.get(status, "Error"))}
        for status in statuses
    }


def declare_problems(operation: dict[str, Any], statuses: set[int]) -> None:
    """Declare ``statuses`` on an OpenAPI operation, and give every error it lists a Problem.

    An error response the route described with a body of its own (health's 503) is kept;
    one it listed with a description only gets the Problem body; FastAPI's 422
    (``HTTPValidationError``, a body the apps never send) is replaced.
    """
    responses: dict[str, Any] = operation.setdefault("responses", {})
    listed = {int(key) for key in responses if key.isdigit() and int(key) >= 400}
    for status in sorted(statuses | listed):
        declared = responses.get(str(status), {})
        content = declared.get("content", {})
        own_body = any(
            media.get("schema") and "HTTPValidationError" not in str(media["schema"])
            for media in content.values()
        )
        if own_body:
            continue
        description = declared.get("description")
        if status == 422 or description in (None, "Validation Error"):
            description = None
        responses[str(status)] = {**declared, **problem_response(status, description)}


def _drop_unused(document: dict[str, Any], names: tuple[str, ...]) -> None:
    schemas = document.get("components", {}).get("schemas", {})
    for name in names:
        schemas.pop(name, None)
        if f"#/components/schemas/{name}" in json.dumps(document):
            raise AssertionError(f"{name} is still referenced")  # pragma: no cover


def install_contract(app: FastAPI) -> None:
    """Declare every operation's problems when the document is built, and ship the schema."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()  # FastAPI's, cached until the routes change
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        if "Problem" in schemas:
            return document  # this document was completed already
        routes = {
            context.unique_id: context
            for context in iter_route_contexts(app.routes)
            if isinstance(context.original_route, APIRoute)
        }
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                route = routes.get(operation.get("operationId"))
                declare_problems(operation, problem_statuses(route) if route else set())
        problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(problem.pop("$defs", {}))
        schemas["Problem"] = problem
        _drop_unused(document, ("HTTPValidationError", "ValidationError"))
        return document

    app.openapi = openapi  # type: ignore[method-assign]


# --- the body limit -------------------------------------------------------------------------


class BodyTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(status_code=413)


class BodyLimitMiddleware:
    """Refuse bodies over ``max_body_size`` bytes with a 413 Problem, before reading them whole.

    A ``Content-Length`` over the limit is refused at once; a chunked body is counted as it
    arrives and refused when it passes the limit (the route's own read raises, so the
    app's handler answers; a response the app already started is left alone).
    """

    def __init__(self, app: ASGIApp, max_body_size: int) -> None:
        self.app = app
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_size:
            await framework_problem(413, {"Connection": "close"})(scope, receive, send)
            return
        received = 0
        started = False

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_size:
                    raise BodyTooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, watched)
        except BodyTooLarge:
            if started:
                raise
            await framework_problem(413, {"Connection": "close"})(scope, receive, send)


__all__ = [
    "BodyLimitMiddleware",
    "declare_problems",
    "install_contract",
    "operation_id",
    "problem_response",
    "problem_statuses",
    "problems",
]
