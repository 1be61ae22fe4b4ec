"""A schema-driven fuzzer (Schemathesis) finds nothing the OpenAPI document does not declare.

Each app runs on a real uvicorn over a fresh PostgreSQL. Every operation of its own
document gets generated requests, valid ones and invalid ones, sent as an admin (a bearer
token, so the authenticated operations are exercised past their guard) and, where the
operation needs a token, once without one (the 401 path). Every answer must be declared
(status code, content type, headers, body schema) and none may be a 5xx. The examples
per operation and mode are fixed and derandomized, so the run is bounded and repeatable.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import APIRouter
from harness import Api, LiveServer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api_kit import create_api

MAX_EXAMPLES = 25  # per operation and generation mode
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CHECKS = {
    GenerationMode.POSITIVE: [*CONFORMANCE, ignored_auth],
    # Not negative_data_rejection: it counts unknown query parameters (ignored, as HTTP APIs
    # do) and a "null" query value for an optional parameter as invalid input accepted.
    GenerationMode.NEGATIVE: CONFORMANCE,
}


def describe(exc: BaseException) -> str:
    parts = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
    return "; ".join(" ".join(str(part).split())[:400] for part in parts)


def fuzz_one(
    base_url: str, operation: Any, mode: GenerationMode, headers: dict[str, str], seen: Counter[int]
) -> int:
    """Send up to ``MAX_EXAMPLES`` generated requests; raise on the first failed check."""
    sent = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        nonlocal sent
        sent += 1
        response = case.call_and_validate(
            base_url=base_url, headers=headers, checks=CHECKS[mode], timeout=30
        )
        seen[response.status_code] += 1

    try:
        run()
    except Unsatisfiable:  # no invalid request exists (an operation without inputs)
        assert mode is GenerationMode.NEGATIVE
    return sent


def fuzz(base_url: str, headers_for: Any, seen: Counter[int]) -> tuple[int, list[str]]:
    document = httpx.get(f"{base_url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    sent = 0
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in CHECKS:
            try:
                sent += fuzz_one(base_url, operation, mode, headers_for(operation.path), seen)
            except (Exception, BaseExceptionGroup) as exc:  # one report per operation and mode
                failures.append(f"{mode.value} {operation.label}: {describe(exc)}")
    return sent, failures


@pytest.mark.slow
def test_the_fuzzer_finds_no_answer_the_document_does_not_declare(api: Api) -> None:
    admin = api.admin()
    # Logging out revokes a token: that operation gets its own user, so the admin's token
    # stays valid for the others (after the first logout it answers 401, also declared).
    leaver = api.register()

    def headers_for(path: str) -> dict[str, str]:
        return dict(leaver["headers"] if path.endswith("/logout") else admin["headers"])

    started = time.monotonic()
    seen: Counter[int] = Counter()
    sent, failures = fuzz(api.base_url, headers_for, seen)
    elapsed = time.monotonic() - started
    print(f"{api.name}: {sent} generated requests in {elapsed:.1f} s, {dict(sorted(seen.items()))}")
    assert sent > 100, f"the fuzzer only sent {sent} requests"
    assert not failures, "\n\n".join(failures)


def test_the_fuzzer_does_catch_an_undeclared_answer() -> None:
    # Not vacuous: an operation answering a status, a media type and a body its document
    # does not declare, and a crash, are each reported.
    router = APIRouter(prefix="/probe", tags=["probe"])

    @router.get("/teapot")
    async def teapot() -> dict[str, int]:
        from fastapi.responses import PlainTextResponse

        return PlainTextResponse("short and stout", status_code=418)  # type: ignore[return-value]

    @router.get("/shape")
    async def shape() -> dict[str, int]:
        return {"one": "not an integer"}  # type: ignore[dict-item]

    @router.get("/crash")
    async def crash() -> dict[str, int]:
        raise RuntimeError("boom")

    app = create_api(name="probe", binders=[], routers=[router], requires=())
    with LiveServer(app) as base_url:
        _, failures = fuzz(base_url, lambda path: {}, Counter())
    found = "\n".join(failures)
    assert "GET /probe/teapot" in found
    assert "GET /probe/shape" in found
    assert "GET /probe/crash" in found
    assert "/health/live" not in found
