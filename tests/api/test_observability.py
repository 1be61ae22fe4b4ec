"""Observability over real HTTP and a real PostgreSQL: /metrics, correlation ids, slow queries.

A small app built with ``api_kit.create_api`` (as my_api and bibikos_api are) adds one
route that holds a statement for a second, so the test can look at ``pg_stat_activity``
while the request is in flight.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter
from harness import LiveServer
from sqlalchemy import text
from sqlalchemy.engine import URL

import core_db
from api_kit import DatabaseDep, bind_database, create_api
from core_db import CoreSettings
from db_kit.database import SQLAlchemyDatabase
from db_shared.tenancy import tenant_context
from db_tools.testing import run_sql

SLEEP = 1.0
app_log = logging.getLogger("tests.observability")
router = APIRouter()


@router.get("/slow")
async def slow(db: DatabaseDep) -> dict[str, str]:
    app_log.info("about to sleep in SQL")
    async with db.session() as s:
        await s.execute(text("SELECT pg_sleep(:s)"), {"s": SLEEP})
    return {"status": "slept"}


@router.get("/fast")
async def fast(db: DatabaseDep) -> dict[str, int]:
    async with db.session() as s:
        return {"one": (await s.execute(text("SELECT 1"))).scalar_one()}


@pytest.fixture
def served(database_at_head: Callable[..., URL]) -> Iterator[tuple[str, URL]]:
    url = database_at_head(core_db.CONFIG)
    settings = CoreSettings(slow_query_ms=300)
    database = SQLAlchemyDatabase(core_db.CONFIG, settings=settings, url=url)
    app = create_api(name="observed", binders=[bind_database(database)], routers=[router])
    with LiveServer(app) as base_url:
        yield base_url, url


def metric(body: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in body.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = line[len(name) + 1 : line.index("}")]
        if ",".join(sorted(found.split(","))) == wanted:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_the_queries_of_a_request(served: tuple[str, URL]) -> None:
    base, _ = served
    with httpx.Client(base_url=base, timeout=30) as client:
        assert client.get("/fast").status_code == 200  # engines built, dialect initialised
        before = client.get("/metrics")
        assert before.status_code == 200
        assert before.headers["content-type"].startswith("text/plain")
        labels = {"database": "core", "tenant": "-"}
        count_before = metric(before.text, "db_query_duration_seconds_count", **labels)
        for _ in range(3):
            assert client.get("/fast").json() == {"one": 1}
        after = client.get("/metrics").text
    # Each /fast runs its SELECT, and the pool's pre-ping sends one more (";"): every
    # statement the driver sends is counted under this database.
    counted = metric(after, "db_query_duration_seconds_count", **labels) - count_before
    assert 3 <= counted <= 6, counted
    assert metric(after, "db_query_duration_seconds_sum", **labels) > 0
    assert "db_query_errors_total" in after


def test_correlation_id_reaches_logs_and_pg_stat_activity(
    served: tuple[str, URL], caplog: pytest.LogCaptureFixture
) -> None:
    base, url = served
    request_id = "req-7f3a9c"
    result: dict[str, httpx.Response] = {}

    def call() -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            result["r"] = client.get("/slow", headers={"X-Request-ID": request_id})

    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="api_kit.request")  # INFO only in development
    worker = threading.Thread(target=call)
    worker.start()
    seen: list[str] = []
    deadline = time.monotonic() + SLEEP * 3
    while not seen and time.monotonic() < deadline:
        seen = [
            q
            for (q,) in run_sql(
                url,
                "SELECT query FROM pg_stat_activity "
                "WHERE query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()",
            )
        ]
        time.sleep(0.05)
    worker.join(timeout=30)
    assert seen, "the slow statement never showed in pg_stat_activity"
    assert seen[0].startswith(f"/* request_id={request_id} */ "), seen
    response = result["r"]
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == request_id

    # The request's own line is written once the response is sent: wait for it.
    deadline = time.monotonic() + 5
    while True:
        mine = [r for r in caplog.records if getattr(r, "correlation_id", None) == request_id]
        by_logger = {r.name for r in mine}
        if "api_kit.request" in by_logger or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    # The app's own line, the slow-query log and the request line all carry the id.
    assert {"tests.observability", "db_kit.slow_query", "api_kit.request"} <= by_logger, by_logger
    slow = next(r for r in mine if r.name == "db_kit.slow_query")
    assert "pg_sleep" in slow.getMessage()
    assert slow.levelno == logging.WARNING
    assert getattr(slow, "duration_ms", 0) >= SLEEP * 1000 * 0.9
    # Parameters are never logged (only the statement's text).
    assert str(SLEEP) not in slow.getMessage().split("pg_sleep")[1]


def test_unsafe_request_ids_are_replaced(served: tuple[str, URL]) -> None:
    base, _ = served
    with httpx.Client(base_url=base, timeout=30) as client:
        r = client.get("/fast", headers={"X-Request-ID": "x */ DROP TABLE auth_users; --"})
        generated = client.get("/fast")
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-ID"])
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["X-Request-ID"])
    assert r.headers["X-Request-ID"] != generated.headers["X-Request-ID"]


def test_metrics_are_labelled_by_tenant(database_at_head: Callable[..., URL]) -> None:
    """Schema-per-tenant: the tenant label is the current tenant of each statement."""
    import asyncio

    from prometheus_client import REGISTRY

    from core_db.config import REGISTRY as TENANT_REGISTRY
    from db_kit.migrations.migrator import Migrator
    from db_kit.migrations.schema_tenants import SchemaTenantMigrator

    url = database_at_head(core_db.CONFIG)
    Migrator(TENANT_REGISTRY, url).upgrade()
    SchemaTenantMigrator(core_db.CONFIG, url).create("metered")
    db = SQLAlchemyDatabase(core_db.CONFIG, url=url, multi_tenant=True)

    def count() -> float:
        labels = {"database": "core", "tenant": "metered"}
        return REGISTRY.get_sample_value("db_query_duration_seconds_count", labels) or 0.0

    async def scenario() -> None:
        with tenant_context("metered"):
            for _ in range(4):
                async with db.session() as s:
                    await s.execute(text("SELECT count(*) FROM auth_users"))
        await db.dispose()

    before = count()
    asyncio.run(scenario())
    # 4 SELECTs, plus the dialect's first-connect queries and the pool's pre-pings.
    assert before + 4 <= count() <= before + 4 + 4 + 3


def test_opentelemetry_spans_when_installed(database_at_head: Callable[..., URL]) -> None:
    pytest.importorskip("opentelemetry.instrumentation.sqlalchemy")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    url = database_at_head(core_db.CONFIG)

    traced = SQLAlchemyDatabase(core_db.CONFIG, url=url)
    with traced.sync_session() as s:
        s.execute(text("SELECT 41 + 1"))
    traced.dispose_sync()
    spans = [sp for sp in exporter.get_finished_spans() if "41 + 1" in str(sp.attributes)]
    assert spans, [sp.attributes for sp in exporter.get_finished_spans()]
    assert spans[0].attributes is not None
    assert spans[0].attributes.get("db.system") in ("postgresql", "postgres")

    exporter.clear()
    quiet = SQLAlchemyDatabase(core_db.CONFIG, settings=CoreSettings(opentelemetry=False), url=url)
    with quiet.sync_session() as s:
        s.execute(text("SELECT 41 + 2"))
    quiet.dispose_sync()
    assert not [sp for sp in exporter.get_finished_spans() if "41 + 2" in str(sp.attributes)]


WORKER = """
import asyncio, sys
from sqlalchemy import text
import core_db
from db_kit.database import SQLAlchemyDatabase

db = SQLAlchemyDatabase(core_db.CONFIG, url=sys.argv[1])

async def main() -> None:
    for _ in range(int(sys.argv[2])):
        async with db.session() as s:
            await s.execute(text("SELECT 1"))
    await db.dispose()

asyncio.run(main())
"""

SCRAPE = """
from prometheus_client import generate_latest
from api_kit.observability import metrics_registry
print(generate_latest(metrics_registry()).decode())
"""


def test_prefork_workers_are_summed_in_one_scrape(
    database_at_head: Callable[..., URL], tmp_path: Path
) -> None:
    """Under a pre-fork server each worker writes its samples to PROMETHEUS_MULTIPROC_DIR;
    /metrics (metrics_registry) then reports the sum of every worker."""
    import os
    import subprocess
    import sys

    from db_tools.testing import url_string

    url = url_string(database_at_head(core_db.CONFIG))
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for count in (3, 4):  # two "workers", one after the other
        subprocess.run(
            [sys.executable, "-c", WORKER, url, str(count)], env=env, check=True, timeout=120
        )
    scrape = subprocess.run(
        [sys.executable, "-c", SCRAPE], env=env, check=True, timeout=60,
        capture_output=True, text=True,
    )  # fmt: skip
    # 7 SELECTs plus each worker's first-connect queries and pre-pings: all summed.
    total = metric(scrape.stdout, "db_query_duration_seconds_count", database="core", tenant="-")
    assert 7 <= total <= 7 + 2 * 4 + 7, scrape.stdout
