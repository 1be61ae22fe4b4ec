"""HTTP metrics, the /metrics token and the request log line, over a real uvicorn.

``http_requests_total`` and ``http_request_duration_seconds`` are labelled by route template
(``/gym/classes/{class_id}``), never by the raw path; a path no route serves is
``<unmatched>``. The request line (``api_kit.request``) carries the tenant of a tenant
request, and ``LOG_FORMAT=json`` writes each record as one JSON object.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from harness import Api, LiveServer
from sqlalchemy.engine import URL

import core_db
from api_kit.observability import UNMATCHED_ROUTE, JsonFormatter, log_formatter
from core_db.config import REGISTRY
from db_kit.database import SQLAlchemyDatabase
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.schema_tenants import SchemaTenantMigrator
from my_api.main import MyApiRouting, create_app

CLASS_ROUTE = "/gym/classes/{class_id}"


def sample(body: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = sorted(f'{k}="{v}"' for k, v in labels.items())
    for line in body.splitlines():
        if line.startswith(name + "{"):
            found = line[len(name) + 1 : line.rindex("}")]
            if sorted(found.split(",")) == wanted:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_requests_are_counted_by_route_template_and_status(
    serve: Callable[[str], Api],
) -> None:
    api = serve("bibikos_api")
    user = api.register()
    client = api.client
    before = client.get("/metrics").text
    statuses = {client.get(f"/gym/classes/{n}", headers=user["headers"]).status_code
                for n in (987651, 987652, 987653)}  # fmt: skip
    assert len(statuses) == 1, statuses
    (class_status,) = statuses
    for path in ("/no/such/path-1", "/no/such/path-2"):
        assert client.get(path).status_code == 404
    assert client.put("/health/live").status_code == 405  # a partial match keeps its route
    after = client.get("/metrics")
    assert after.status_code == 200
    body = after.text

    def delta(name: str, **labels: str) -> float:
        return sample(body, name, **labels) - sample(before, name, **labels)

    get_class = {"method": "GET", "route": CLASS_ROUTE}
    assert delta("http_requests_total", **get_class, status=str(class_status)) == 3
    assert delta("http_request_duration_seconds_count", **get_class) == 3
    assert delta("http_request_duration_seconds_sum", **get_class) > 0
    unmatched = {"method": "GET", "route": UNMATCHED_ROUTE, "status": "404"}
    assert delta("http_requests_total", **unmatched) == 2
    assert delta("http_requests_total", method="PUT", route="/health/live", status="405") == 1
    assert delta("http_requests_total", method="POST", route="/auth/login", status="200") == 0
    # Raw paths never become labels; the database metrics sit beside the HTTP ones.
    assert "987651" not in body
    assert "path-1" not in body
    assert "db_query_duration_seconds_count" in body


def test_metrics_token_guards_the_endpoint(
    serve: Callable[[str], Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = serve("my_api")
    assert api.client.get("/metrics").status_code == 200  # unset: open, as before
    monkeypatch.setenv("METRICS_TOKEN", "scrape-me-7")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic scrape-me-7"}):
        refused = api.client.get("/metrics", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert refused.json()["code"] == "unauthenticated"
        assert "http_requests_total" not in refused.text
    allowed = api.client.get("/metrics", headers={"Authorization": "Bearer scrape-me-7"})
    assert allowed.status_code == 200
    assert "http_requests_total" in allowed.text


@pytest.fixture
def tenant_base(fresh_database: Callable[..., URL]) -> Iterator[str]:
    url = fresh_database("log_tenant")
    Migrator(REGISTRY, url).upgrade()
    Migrator(core_db.CONFIG, url).upgrade()
    SchemaTenantMigrator(core_db.CONFIG, url).create("acme")
    database = SQLAlchemyDatabase(core_db.CONFIG, url=url, multi_tenant=True)
    app = create_app(database, MyApiRouting(tenant_base_domain="example.test"))
    with LiveServer(app) as base_url:
        yield base_url


def test_request_line_carries_the_tenant_and_formats_as_json(
    tenant_base: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="api_kit.request")  # INFO only in development
    host = {"Host": "acme.example.test"}
    with httpx.Client(base_url=tenant_base, timeout=30) as client:
        body = {"email": "log@example.com", "password": "long enough 1"}
        created = client.post("/auth/register", json=body, headers={**host, "X-Request-ID": "t-1"})
        assert created.status_code == 201
        unknown = client.get(
            "/auth/me", headers={"Host": "nope.example.test", "X-Request-ID": "t-2"}
        )
        assert unknown.status_code == 404
    # The server writes a request's line once the response is sent: it may come a moment
    # after the client has the response.
    deadline = time.monotonic() + 5
    while True:
        lines = {r.correlation_id: r for r in caplog.records if r.name == "api_kit.request"}  # type: ignore[attr-defined]
        if {"t-1", "t-2"} <= lines.keys() or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert lines["t-1"].tenant == "acme"  # type: ignore[attr-defined]
    assert lines["t-2"].tenant == "-"  # type: ignore[attr-defined]  # refused: no tenant

    entry = json.loads(JsonFormatter().format(lines["t-1"]))
    assert entry["correlation_id"] == "t-1"
    assert entry["tenant"] == "acme"
    assert entry["logger"] == "api_kit.request"
    assert entry["level"] == "DEBUG"
    assert entry["message"].startswith("POST /auth/register -> 201 in ")
    assert entry["timestamp"].endswith("+00:00")


def test_log_format_chooses_the_formatter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    assert not isinstance(log_formatter(), JsonFormatter)
    monkeypatch.setenv("LOG_FORMAT", "JSON")
    assert isinstance(log_formatter(), JsonFormatter)


JSON_PROCESS = """
import logging
from api_kit.observability import configure_logging
from db_shared.correlation import correlation_context
from db_shared.tenancy import tenant_context

configure_logging()
log = logging.getLogger("app.orders")
with correlation_context("job-9"), tenant_context("acme"):
    log.info("order %s placed", 42, extra={"order_id": 42})
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("it broke")
log.warning("outside")
"""


def test_json_logs_every_line_of_a_process() -> None:
    """LOG_FORMAT=json in a fresh process: configure_logging's handler writes JSON lines."""
    import os

    env = {**os.environ, "LOG_FORMAT": "json"}
    done = subprocess.run(
        [sys.executable, "-c", JSON_PROCESS], env=env, check=True, timeout=60,
        capture_output=True, text=True,
    )  # fmt: skip
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    assert [e["message"] for e in entries] == ["order 42 placed", "it broke", "outside"]
    for entry in entries:
        assert {"timestamp", "level", "logger", "message", "correlation_id", "tenant"} <= set(entry)
    assert entries[0]["correlation_id"] == "job-9"
    assert entries[0]["tenant"] == "acme"
    assert entries[0]["order_id"] == 42
    assert "ZeroDivisionError" in entries[1]["exception"]
    assert (entries[2]["correlation_id"], entries[2]["tenant"]) == ("-", "-")
