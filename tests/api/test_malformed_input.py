"""No request, however malformed, yields a 500: a sweep over every operation of each app.

The operations come from the app's own OpenAPI document, so a route added later is swept
too. Requests are sent as an admin, so role checks do not hide the validation behind them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from harness import Api

HUGE = "x" * 100_000
BAD_IDS = ["0", "-1", str(2**63), str(2**70), "abc", "1.5", "%00"]


def resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


# Plausible values by field name, so a request passes validation and reaches the database
# with one field spoiled at a time.
EXAMPLES: dict[str, Any] = {
    "email": "sweep@example.com",
    "password": "long enough 1",
    "username": "sweeper",
    "avatar_url": "https://example.com/a.png",
    "locale": "en-GB",
    "timezone": "Europe/Athens",
    "currency": "EUR",
    "interval": "month",
    "membership_type": "basic",
    "provider": "google",
    "role": "coach",
    "status": "new",
    "starts_at": "2031-01-01T10:00:00Z",
    "ends_at": "2031-01-01T11:00:00Z",
    "capacity": 10,
    "amount_minor": 100,
    "price_id": 1,
    "user_ids": [1],
    "data": {"k": "v"},
    "at_period_end": True,
}
BY_TYPE: dict[str, Any] = {
    "string": "sweep",
    "integer": 1,
    "number": 1,
    "boolean": True,
    "array": [],
    "object": {},
}
BAD_VALUES: list[Any] = [
    HUGE, -1, 2**70, -(2**70), 1.5, "ÿ" * 300, True, None, "a\x00b", "\x00", "", "not-an-email@",
    "eur", "2031-13-45T99:00:00Z", [HUGE] * 3, {"nested": [1, 2]}, [-(2**70)],
]  # fmt: skip


def _type_of(prop: dict[str, Any], spec: dict[str, Any]) -> str:
    prop = resolve(prop, spec)
    if "type" in prop:
        return str(prop["type"])
    for option in prop.get("anyOf", []):
        option = resolve(option, spec)
        if option.get("type") not in (None, "null"):
            return str(option["type"])
    return "string"


def body_variants(schema: dict[str, Any], spec: dict[str, Any]) -> list[Any]:
    schema = resolve(schema, spec)
    props: dict[str, Any] = schema.get("properties", {})
    base = {
        name: EXAMPLES.get(name, BY_TYPE.get(_type_of(prop, spec), "sweep"))
        for name, prop in props.items()
    }
    variants: list[Any] = [
        base,
        {},
        [],
        "a string",
        None,
        {**base, "unexpected_field": 1},
        {name: HUGE for name in props},
        {name: None for name in props},
    ]
    for name in props:
        for value in BAD_VALUES:
            variants.append({**base, name: value})
    return variants


def test_no_malformed_request_is_a_500(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    admin = api.admin()
    headers = admin["headers"]
    sent = 0
    failures: list[str] = []

    def check(method: str, url: str, **kwargs: Any) -> None:
        nonlocal sent
        kwargs.setdefault("headers", headers)
        response = api.client.request(method, url, **kwargs)
        sent += 1
        if response.status_code >= 500:
            failures.append(f"{method} {url} {str(kwargs)[:120]} -> {response.status_code}")

    # Logging out revokes the admin's token: sweep it last so it hides nothing else.
    ordered = sorted(spec["paths"].items(), key=lambda item: item[0].endswith("/logout"))
    for path, operations in ordered:
        for method, op in operations.items():
            method = method.upper()
            params = re.findall(r"{(\w+)}", path)
            urls = [re.sub(r"{\w+}", bad, path) for bad in BAD_IDS] if params else [path]
            concrete = re.sub(r"{\w+}", "1", path)
            for url in urls:
                check(method, url)
            for query in op.get("parameters", []):
                if query.get("in") == "query":
                    for bad in ["-1", str(2**70), "abc", HUGE[:5000], "%00"]:
                        check(method, concrete, params={query["name"]: bad})
            content = op.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            schema = content["application/json"]["schema"]
            for raw in (b"{not json", b"", b"\xff\xfe", json.dumps([1] * 10_000).encode()):
                check(
                    method,
                    concrete,
                    content=raw,
                    headers={**headers, "content-type": "application/json"},
                )
            for body in body_variants(schema, spec):
                check(method, concrete, json=body)
    assert sent > 100, f"the sweep only sent {sent} requests"
    assert not failures, "\n".join(failures[:30])


def test_oversized_body_is_413_and_errors_do_not_echo_input(api: Api) -> None:
    big = {"email": "a@example.com", "password": "x" * 2_000_000}
    assert api.client.post("/auth/register", json=big).status_code == 413
    long_password = {"email": "a@example.com", "password": "p" * 5000}
    refused = api.client.post("/auth/register", json=long_password)
    assert refused.status_code == 422
    assert "p" * 5000 not in refused.text
    assert refused.json()["errors"][0]["loc"] == ["body", "password"]
