"""api_kit's one error table: domain refusals and database errors become the same JSON.

Domain errors (``db_shared.errors.DomainError``) carry no HTTP status: the table decides it
and keeps their code, detail and fields. Database errors get a public code and detail.
"""

from __future__ import annotations

import ast
import inspect
import json
from http import HTTPStatus
from pathlib import Path

import pytest
from fastapi import APIRouter

import api_kit
import db_shared.errors as errors
from api_kit.errors import ERROR_ANSWERS, Problem, response_for
from api_kit.tenancy import tenant_exempt, tenant_exempt_paths
from db_shared.tenancy import UnknownTenantError

API_KIT = Path(api_kit.__file__).parent


def body(exc: Exception) -> tuple[int, dict[str, object], str | None]:
    """Status, the body beyond RFC 9457's members (checked here), and Retry-After."""
    response = response_for(exc)
    assert response.headers["content-type"] == "application/problem+json"
    payload = json.loads(response.body)
    assert payload.pop("status") == response.status_code
    assert payload.pop("title") == HTTPStatus(response.status_code).phrase
    assert payload.pop("type") == f"https://errors.data-layer.dev/{payload['code']}"
    Problem.model_validate({**payload, "status": response.status_code, "title": "t", "type": "u"})
    return response.status_code, payload, response.headers.get("retry-after")


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (errors.ResourceNotFoundError, 404),
        (errors.ConflictError, 409),
        (errors.ForbiddenError, 403),
        (errors.UnauthenticatedError, 401),
        (errors.InvalidInputError, 422),
        (errors.RateLimitedError, 429),
    ],
)
def test_a_domain_error_keeps_its_code_detail_and_fields(
    kind: type[errors.DomainError], status: int
) -> None:
    extra = {"retry_after": 7} if kind is errors.RateLimitedError else {}
    assert body(kind("class_full", "All 3 places are taken.", **extra))[:2] == (  # type: ignore[arg-type]
        status,
        {"code": "class_full", "detail": "All 3 places are taken."},
    )
    assert body(kind("price_inactive", "Gone.", fields=("price_id",), **extra))[1] == {  # type: ignore[arg-type]
        "code": "price_inactive",
        "detail": "Gone.",
        "fields": ["price_id"],
    }


def test_domain_errors_carry_no_http_status() -> None:
    refusal = errors.ConflictError("already_member", "You are already a gym member.")
    assert not {"status", "status_code"} & set(vars(refusal))
    assert str(refusal) == "You are already a gym member."


def test_every_domain_error_kind_has_a_row() -> None:
    kinds = {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.DomainError) and cls is not errors.DomainError
    }
    listed = {
        kind
        for kinds, _ in ERROR_ANSWERS
        for kind in (kinds if isinstance(kinds, tuple) else (kinds,))
    }
    assert kinds <= listed


def test_an_unlisted_refusal_is_a_client_error_with_its_own_code() -> None:
    class Unlisted(errors.DomainError):
        pass

    assert body(Unlisted("odd", "Odd.")) == (400, {"code": "odd", "detail": "Odd."}, None)


def test_database_errors_keep_their_answers() -> None:
    assert body(errors.DuplicateEntryError(columns=("email",))) == (
        409,
        {
            "code": "duplicate",
            "detail": "A record with this email already exists.",
            "fields": ["email"],
        },
        None,
    )
    assert body(errors.NotFoundError("user", 7)) == (
        404,
        {"code": "not_found", "detail": "user 7 was not found"},
        None,
    )
    assert body(errors.DatabaseUnavailableError("down", host="db", port=5432)) == (
        503,
        {"code": "unavailable", "detail": "The database is unavailable; retry shortly."},
        "5",
    )
    assert body(UnknownTenantError("acme"))[:2] == (
        404,
        {"code": "unknown_tenant", "detail": "No tenant is served at this address."},
    )
    assert body(errors.CheckViolationError(columns=("capacity",)))[:2] == (
        422,
        {
            "code": "invalid",
            "detail": "A value was refused by the database rules.",
            "fields": ["capacity"],
        },
    )
    assert body(errors.DatabaseError("what?"))[:2] == (
        500,
        {"code": "database_error", "detail": "Unexpected database error."},
    )


# --- api_kit is generic: no feature's paths, no svcs internals, no late middleware ---------


def api_kit_sources() -> dict[Path, str]:
    return {path: path.read_text(encoding="utf-8") for path in API_KIT.rglob("*.py")}


def test_api_kit_names_no_feature_path_or_name() -> None:
    for path, source in api_kit_sources().items():
        for word in ("/auth", "webhook", "identity", "/payments", "/contact", "/notifications"):
            assert word not in source.lower(), f"{path.name} mentions {word!r}"


def test_api_kit_uses_only_svcs_public_api() -> None:
    for path, source in api_kit_sources().items():
        assert "svcs_registry" not in source, f"{path.name} reads svcs' private state key"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("svcs"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
                assert "._" not in (node.module or ""), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                base = ast.unparse(node.value)
                assert not base.startswith("svcs"), f"{path.name} uses {base}.{node.attr}"


def test_no_middleware_is_inserted_after_the_app_is_built() -> None:
    root = API_KIT.parents[2]
    sources = [*root.glob("*/src/**/*.py"), *root.parent.glob("apps/*/src/**/*.py")]
    offenders = [
        str(path)
        for path in sources
        if "user_middleware." in path.read_text(encoding="utf-8")
        or "user_middleware[" in path.read_text(encoding="utf-8")
    ]
    assert not offenders


def test_tenant_exempt_routers_give_their_prefix_or_route_paths() -> None:
    marked = tenant_exempt(APIRouter(prefix="/hooks"))
    unmarked = APIRouter(prefix="/users")
    bare = tenant_exempt(APIRouter())

    @bare.post("/callback")
    async def callback() -> None: ...

    assert tenant_exempt_paths([marked, unmarked, bare]) == ("/hooks", "/callback")


def test_a_401_names_its_scheme_and_a_429_when_to_retry() -> None:
    refused = response_for(errors.UnauthenticatedError("invalid_token", "No."))
    assert refused.headers["www-authenticate"] == "Bearer"
    limited = errors.RateLimitedError("too_many_attempts", "Wait.", retry_after=42)
    assert body(limited) == (429, {"code": "too_many_attempts", "detail": "Wait."}, "42")
