"""Each migration stream of core_db acts only on what it owns, and says so truthfully.

core_db has two streams: the registry (the ``core`` schema) and the application tables
(the default schema and, migrated by the same revisions, every tenant schema).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from typer.testing import CliRunner

import core_db
from core_db.config import REGISTRY
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.schema_tenants import SchemaTenantMigrator
from db_tools.cli import build_app
from db_tools.testing import run_sql as sql


@pytest.fixture
def core_url(fresh_database: Callable[..., URL], monkeypatch: pytest.MonkeyPatch) -> Iterator[URL]:
    """A core database after `make run`: registry, default schema, a user, tenant acme."""
    url = fresh_database("streams")
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.setenv("ENVIRONMENT", "development")
    core_db.CONFIG.reset()
    REGISTRY.reset()
    Migrator(REGISTRY, url).upgrade()
    Migrator(core_db.CONFIG, url).upgrade()
    SchemaTenantMigrator(core_db.CONFIG, url).create("acme", "Acme")
    sql(url, "INSERT INTO public.auth_users (email) VALUES ('ada@example.com')")
    sql(url, "INSERT INTO tenant_acme.auth_users (email) VALUES ('acme@example.com')")
    yield url
    core_db.CONFIG.reset()
    REGISTRY.reset()


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), list(args))
    return result.exit_code, result.output


def test_registry_reset_keeps_the_application_tables(core_url: URL) -> None:
    code, out = invoke("core", "registry", "reset", "--yes")
    assert code == 0, out
    assert "schema core" in out
    # The application's tables and rows are untouched.
    assert sql(core_url, "SELECT email FROM public.auth_users") == [("ada@example.com",)]
    assert sql(core_url, "SELECT email FROM tenant_acme.auth_users") == [("acme@example.com",)]
    # The registry itself was rebuilt: empty, at its head.
    assert sql(core_url, "SELECT count(*) FROM core.tenants") == [(0,)]
    head = Migrator(REGISTRY, core_url).heads()[0]
    assert sql(core_url, "SELECT version_num FROM core.alembic_version") == [(head,)]
    # What it left behind is said, not silently orphaned.
    assert "no longer in the registry" in out
    assert "tenant_acme" in out


def test_database_reset_keeps_the_registry_and_rebuilds_tenant_schemas(core_url: URL) -> None:
    code, out = invoke("core", "reset", "--yes")
    assert code == 0, out
    assert sql(core_url, "SELECT count(*) FROM public.auth_users") == [(0,)]
    assert sql(core_url, "SELECT count(*) FROM tenant_acme.auth_users") == [(0,)]
    # The registry is another stream's: acme is still registered, at head.
    head = Migrator(core_db.CONFIG, core_url).heads()[0]
    assert sql(core_url, "SELECT slug, name, revision FROM core.tenants") == [
        ("acme", "Acme", head)
    ]
    assert "1 tenant schema(s) rebuilt" in out
    assert invoke("core", "status")[0] == 0


def test_a_stream_offers_only_its_commands_and_true_help(core_url: URL) -> None:
    code, out = invoke("core", "registry", "--help")
    assert code == 0
    commands = {line.split()[1] for line in out.splitlines() if line.startswith("│ ")}
    assert "seed" not in commands
    assert "studio" not in commands
    assert "tenants" not in commands
    assert {"migrate", "deploy", "status", "reset", "downgrade", "generate"} <= commands

    code, out = invoke("core", "registry", "migrate", "--help")
    assert code == 0
    flat = " ".join(out.split())
    assert "tenant registry" in flat
    assert "every tenant" not in flat
    assert "--workers" not in flat

    code, out = invoke("core", "migrate", "--help")
    assert "every tenant schema" in " ".join(out.split())
    code, out = invoke("core", "registry", "reset", "--help")
    assert "core schema" in " ".join(out.split())
    code, out = invoke("core", "registry", "seed")
    assert code != 0


def test_duplicate_tenant_says_so(core_url: URL) -> None:
    code, out = invoke("core", "tenants", "create", "acme")
    assert code == 1
    flat = " ".join(out.split())
    assert "tenant acme already exists" in flat
    assert "uq_" not in flat
    assert "tenants_slug" not in flat
    # A schema left without a registry row is named as such.
    sql(core_url, "CREATE SCHEMA tenant_orphan")
    code, out = invoke("core", "tenants", "create", "orphan")
    assert code == 1
    assert "schema tenant_orphan already exists" in " ".join(out.split())
    assert sql(core_url, "SELECT count(*) FROM core.tenants WHERE slug = 'orphan'") == [(0,)]


def test_tenant_migration_behind_a_long_transaction_times_out_then_resumes(
    core_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORE_DB_MIGRATION_LOCK_TIMEOUT_MS", "200")
    monkeypatch.setenv("CORE_DB_MIGRATION_LOCK_RETRIES", "1")
    core_db.CONFIG.reset()
    SchemaTenantMigrator(core_db.CONFIG, core_url).create("globex")
    # acme pending again: an empty schema with an empty version table, which an open
    # transaction holds in a mode that lets readers in but not the runner's INSERT.
    sql(core_url, "DROP SCHEMA tenant_acme CASCADE")
    sql(core_url, "CREATE SCHEMA tenant_acme")
    sql(
        core_url,
        "CREATE TABLE tenant_acme.alembic_version (version_num varchar(32) PRIMARY KEY)",
    )
    sql(core_url, "UPDATE core.tenants SET revision = NULL WHERE slug = 'acme'")
    engine = create_engine(core_url)
    blocker = engine.connect()
    pid = blocker.execute(text("SELECT pg_backend_pid()")).scalar_one()
    blocker.execute(text("LOCK TABLE tenant_acme.alembic_version IN SHARE MODE"))
    try:
        started = time.perf_counter()
        code, out = invoke("core", "tenants", "migrate")
        elapsed = time.perf_counter() - started
    finally:
        blocker.rollback()
    assert code == 1, out
    assert elapsed < 10, elapsed
    assert "1 failed" in out
    # The table wraps it: the registry keeps the whole reason.
    ((error,),) = sql(core_url, "SELECT last_error FROM core.tenants WHERE slug = 'acme'")
    assert "tenant acme revision" in error
    assert "could not take a lock within 200 ms" in error
    assert f"pid {pid}" in error
    # Its one transaction was rolled back: only the version table is there.
    assert sql(
        core_url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'tenant_acme'",
    ) == [("alembic_version",)]
    # Once the blocker is gone, a rerun resumes.
    code, out = invoke("core", "tenants", "migrate")
    assert code == 0, out
    assert "1 migrated" in out
    blocker.close()
    engine.dispose()


def test_migration_advisory_lock_still_waits_past_the_lock_timeout(
    core_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timeouts are for DDL; waiting for another deploy's lock is not cut short."""
    from db_kit.migrations.env import LOCK_CLASS, lock_key

    monkeypatch.setenv("CORE_DB_MIGRATION_LOCK_TIMEOUT_MS", "100")
    core_db.CONFIG.reset()
    engine = create_engine(core_url)
    holder = engine.connect()
    key = lock_key(core_db.CONFIG.version_table)
    holder.execute(text("SELECT pg_advisory_lock(:c, :k)"), {"c": LOCK_CLASS, "k": key})
    holder.commit()
    result: dict[str, object] = {}

    def deploy() -> None:
        result["moved"] = Migrator(core_db.CONFIG, core_url).upgrade()

    thread = threading.Thread(target=deploy)
    thread.start()
    time.sleep(1.0)  # ten lock timeouts
    assert thread.is_alive()
    holder.execute(text("SELECT pg_advisory_unlock(:c, :k)"), {"c": LOCK_CLASS, "k": key})
    holder.commit()
    thread.join(30)
    assert "moved" in result
    holder.close()
    engine.dispose()
