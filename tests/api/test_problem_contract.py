"""Every error answer is an RFC 9457 problem, and the OpenAPI document says so.

Over HTTP on a real uvicorn, both apps: unknown routes, wrong methods, unreadable and
oversized bodies, invalid input, missing and insufficient credentials, conflicts. Then the
document itself: readable unique operation ids, every error declared with the Problem
schema, and FastAPI's HTTPValidationError (a body the apps never send) gone.
"""

from __future__ import annotations

import re
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx
from harness import Api

PROBLEM = "application/problem+json"
ERRORS_BASE = "https://errors.data-layer.dev/"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == ERRORS_BASE + code
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


def test_unknown_route_and_wrong_method(api: Api) -> None:
    assert_problem(api.client.get("/no/such/route"), 404, "not_found")
    # /auth/me/profile has GET and PUT, served by two routes: Allow names both.
    wrong = api.client.delete("/auth/me/profile")
    assert_problem(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "GET, PUT"
    assert api.client.put("/auth/register").headers["allow"] == "POST"


def test_unparseable_bodies_are_400(api: Api) -> None:
    h = {"content-type": "application/json"}
    for raw in (b"{not json", b'{"email": "\xff\xfe"}', b"[" * 100_000 + b"]" * 100_000):
        body = assert_problem(
            api.client.post("/auth/register", content=raw, headers=h), 400, "malformed_body"
        )
        assert "not json" not in body["detail"]


def test_oversized_bodies_are_413_declared_or_streamed(api: Api) -> None:
    big = b'{"email": "a@example.com", "password": "' + b"x" * 2_000_000 + b'"}'
    h = {"content-type": "application/json"}
    assert_problem(api.client.post("/auth/register", content=big, headers=h), 413, "too_large")

    def chunks() -> Any:  # no Content-Length: counted as it arrives
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    streamed = api.client.post("/auth/register", content=chunks(), headers=h)
    assert_problem(streamed, 413, "too_large")


def test_oversized_body_on_a_raw_socket_gets_a_problem(api: Api) -> None:
    # A client that announces too much is answered before it sends anything.
    url = urlsplit(api.base_url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            b"POST /contact HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 999999999\r\n\r\n"
        )
        answer = sock.recv(65536).decode("latin-1")
    assert answer.startswith("HTTP/1.1 413")
    assert f"content-type: {PROBLEM}" in answer.lower()


def test_invalid_input_is_422_with_errors_and_fields_never_echoed(api: Api) -> None:
    refused = api.client.post("/auth/register", json={"email": "nope", "password": "p" * 5000})
    body = assert_problem(refused, 422, "invalid_request")
    assert set(body["fields"]) == {"email", "password"}
    assert {tuple(e["loc"]) for e in body["errors"]} == {("body", "email"), ("body", "password")}
    assert "p" * 5000 not in refused.text


def test_credentials_and_roles(api: Api) -> None:
    missing = api.client.get("/auth/me")
    assert_problem(missing, 401, missing.json()["code"])
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = api.client.get("/auth/me", headers={"Authorization": "Bearer not-a-token"})
    assert_problem(wrong, 401, wrong.json()["code"])
    assert wrong.headers["www-authenticate"] == "Bearer"
    user = api.register()
    forbidden = api.client.get("/contact", headers=user["headers"])
    assert_problem(forbidden, 403, forbidden.json()["code"])
    again = api.client.post("/auth/register", json={"email": user["email"], "password": "x" * 12})
    assert assert_problem(again, 409, "duplicate")["fields"] == ["email"]


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, ops in document["paths"].items()
        for method, op in ops.items()
    ]


def test_operation_ids_are_readable_and_unique(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids)), sorted(ids)
    assert {"auth-register", "auth-login", "auth-me", "health-ready"} <= set(ids)
    for operation_id in ids:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", operation_id), operation_id


def test_the_document_declares_every_error_as_a_problem(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert not {"HTTPValidationError", "ValidationError"} & set(schemas)
    assert set(schemas["Problem"]["required"]) == {"type", "title", "status", "detail", "code"}
    for method, path, op in operations(document):
        responses = op["responses"]
        secured = bool(op.get("security"))
        where = f"{method} {path}"
        # 401/403 come with the bearer dependency; login and the webhook list 401 themselves
        listed = path in ("/auth/login", "/auth/webhooks/identity")
        assert ("401" in responses) == (secured or listed), where
        assert ("403" in responses) == secured, where
        assert ("429" in responses) == (path == "/auth/login"), where
        if "requestBody" in op:
            assert {"400", "413", "422"} <= set(responses), where
        if op.get("parameters"):
            assert "422" in responses, where
        for status, response in responses.items():
            if int(status) < 400 or path == "/health/ready":
                continue
            assert response["content"] == {
                PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}
            }, where
            if status in ("429", "503"):
                assert "Retry-After" in response["headers"], where
            if status == "401":
                assert "WWW-Authenticate" in response["headers"], where
