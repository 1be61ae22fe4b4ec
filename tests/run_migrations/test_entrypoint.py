"""The migration container's entrypoint, run as the container runs it, on a real PostgreSQL.

This machine has no Docker engine, so the entrypoint script runs as a subprocess with the
environment compose would give it (ENVIRONMENT=production, URLs, MIGRATE_*), against
databases of the test server: it deploys both databases and a tenant database to an
empty server, is a no-op the second time, migrates pending tenant schemas in worker
processes, and fails clearly and quickly on a wrong password, an unreachable host and a
database that does not exist.

The embedded test server trusts loopback connections, so a wrong password would pass.
``password_role`` makes the server check one role's password: a ``scram-sha-256`` line
for that role alone is put first in the server's pg_hba.conf and reloaded, and removed
afterwards. (On a server that already checks passwords nothing is edited.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL

import bibikos_db
import core_db
from core_db.config import REGISTRY
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.schema_tenants import SchemaTenantMigrator
from db_tools.testing import PostgresServer, run_sql, url_string

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "run_migrations" / "entrypoint.py"
PASSWORD = "Runmig-Pw-7f3a9c"

pytestmark = pytest.mark.slow


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_entrypoint(env: dict[str, str], *args: str, timeout: float = 180) -> Run:
    """Run the entrypoint as the container does; only the given variables plus PATH/HOME."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ENTRYPOINT), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=env["DB_WORKSPACE_ROOT"],
        stdin=subprocess.DEVNULL,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


@pytest.fixture
def container_env(tmp_path: Path) -> dict[str, str]:
    """What compose's env_file gives the container, minus the URLs (each test sets them)."""
    return {
        "ENVIRONMENT": "production",
        "MIGRATE_WAIT_TIMEOUT": "30",
        "MIGRATE_TENANT_WORKERS": "2",
        # Settings read <root>/.env: an empty folder, so a developer's .env never leaks in.
        "DB_WORKSPACE_ROOT": str(tmp_path),
        "BIBIKOS_TENANT_URLS": "{}",
    }


def version(url: URL, schema: str | None = None) -> str | None:
    table = f"{schema}.alembic_version" if schema else "alembic_version"
    rows = run_sql(url, f"SELECT version_num FROM {table}")
    return rows[0][0] if rows else None


def tables(url: URL, schema: str = "public") -> set[str]:
    rows = run_sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = :s", s=schema)
    return {r[0] for r in rows}


def assert_one_line_failure(run: Run, *needles: str) -> str:
    assert run.code != 0, run.output
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{run.stderr}"
    line = lines[0]
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, line
    assert PASSWORD not in run.output
    assert "Traceback" not in run.output
    return line


# the good path ----------------------------------------------------------------------------


def test_deploys_both_databases_then_is_a_no_op(
    fresh_database: Callable[..., URL], container_env: dict[str, str]
) -> None:
    core_url = fresh_database("rm_core")
    bibikos_url = fresh_database("rm_bibikos")
    tenant_url = fresh_database("rm_bibikos_us")
    env = {
        **container_env,
        "DATABASE_URL": url_string(core_url),
        "BIBIKOS_DATABASE_URL": url_string(bibikos_url),
        "BIBIKOS_TENANT_URLS": json.dumps({"us": url_string(tenant_url)}),
        "MIGRATE_DATABASES": "core,bibikos",
    }
    core_head = Migrator(core_db.CONFIG, core_url).heads()[0]
    registry_head = Migrator(REGISTRY, core_url).heads()[0]
    bibikos_head = Migrator(bibikos_db.CONFIG, bibikos_url).heads()[0]

    first = run_entrypoint(env)
    assert first.code == 0, first.output
    assert first.stderr == ""
    assert f"core registry: deployed (empty) -> {registry_head}." in first.stdout
    assert f"core: deployed (empty) -> {core_head}." in first.stdout
    assert f"bibikos: deployed (empty) -> {bibikos_head}." in first.stdout
    assert f"bibikos tenant us: deployed (empty) -> {bibikos_head}." in first.stdout
    assert "done: core, bibikos at head." in first.stdout
    assert version(core_url) == core_head
    assert version(core_url, "core") == registry_head
    assert version(bibikos_url) == bibikos_head
    assert version(tenant_url) == bibikos_head
    assert {"auth_users", "alembic_version"} <= tables(core_url)
    assert "tenants" in tables(core_url, "core")
    assert {"auth_users", "gym_members"} <= tables(bibikos_url)
    assert {"auth_users", "gym_members"} <= tables(tenant_url)

    # A core tenant provisioned between deploys is found at head by the next one.
    SchemaTenantMigrator(core_db.CONFIG, core_url).create("acme")

    second = run_entrypoint(env)
    assert second.code == 0, second.output
    assert "deployed" not in second.stdout.replace("deploying", "")
    for name in ("core registry", "core", "bibikos", "bibikos tenant us"):
        assert f"{name}: already at head" in second.stdout, second.stdout
    assert "core tenant schemas: 0 migrated, 1 already at head, 0 failed." in second.stdout
    assert "bibikos tenant databases: 0 migrated, 1 already at head, 0 failed." in second.stdout
    assert version(core_url) == core_head
    assert version(core_url, "tenant_acme") == core_head
    assert version(tenant_url) == bibikos_head

    # Two tenants registered with empty schemas (as a crashed provisioning leaves them):
    # the next deploy migrates them in worker processes spawned from the entrypoint.
    for slug in ("beta", "gamma"):
        run_sql(core_url, f"CREATE SCHEMA tenant_{slug}")
        run_sql(
            core_url,
            "INSERT INTO core.tenants (slug, name, schema_name) VALUES (:s, :s, :schema)",
            s=slug,
            schema=f"tenant_{slug}",
        )
    third = run_entrypoint(env, "core")
    assert third.code == 0, third.output
    assert "core tenant schemas: 2 migrated, 1 already at head, 0 failed." in third.stdout
    assert f"core tenant beta: deployed (empty) -> {core_head}." in third.stdout
    assert version(core_url, "tenant_gamma") == core_head


def test_registered_tenant_databases_are_deployed_and_recorded(
    fresh_database: Callable[..., URL], container_env: dict[str, str]
) -> None:
    """bibikos tenants of the control registry (no tenant map at all) are deployed too, and
    the registry records their revision: a provisioning tenant turns active."""
    bibikos_url = fresh_database("rm_bibikos_ctl")
    registered = fresh_database("rm_bibikos_reg")
    env = {
        **container_env,
        "BIBIKOS_DATABASE_URL": url_string(bibikos_url),
        "MIGRATE_DATABASES": "bibikos",
    }
    head = Migrator(bibikos_db.CONFIG, bibikos_url).heads()[0]
    first = run_entrypoint(env)
    assert first.code == 0, first.output
    assert "bibikos registry: deployed (empty) -> " in first.stdout
    run_sql(
        bibikos_url,
        "INSERT INTO control.tenants (slug, name, database_name) VALUES ('reg', 'Reg', :d)",
        d=registered.database,
    )
    second = run_entrypoint(env)
    assert second.code == 0, second.output
    assert f"bibikos tenant reg: deployed (empty) -> {head}." in second.stdout
    assert "bibikos tenant databases: 1 migrated, 0 already at head, 0 failed." in second.stdout
    assert version(registered) == head
    row = run_sql(bibikos_url, "SELECT status, revision FROM control.tenants WHERE slug = 'reg'")
    assert row == [("active", head)]


def test_one_database_chosen_by_argument(
    fresh_database: Callable[..., URL], container_env: dict[str, str]
) -> None:
    """The compose `command` chooses; the other database's URL is not even needed."""
    bibikos_url = fresh_database("rm_only")
    env = {**container_env, "BIBIKOS_DATABASE_URL": url_string(bibikos_url)}
    run = run_entrypoint(env, "bibikos")
    assert run.code == 0, run.output
    assert "core" not in run.stdout
    assert version(bibikos_url) is not None


# bad input ----------------------------------------------------------------------------------


def _connects(url: URL, password: str) -> bool:
    try:
        psycopg.connect(
            host=url.host, port=url.port, user=url.username, password=password,
            dbname=url.database, connect_timeout=5,
        ).close()  # fmt: skip
    except psycopg.OperationalError:
        return False
    return True


@pytest.fixture
def password_role(postgres_server: PostgresServer) -> Iterator[str]:
    """A login role whose password the server checks (see the module docstring)."""
    admin = postgres_server.admin_url
    role = f"runmig_{uuid.uuid4().hex[:8]}"
    run_sql(admin, f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
    probe = admin.set(username=role, database="postgres")
    hba: Path | None = None
    original = ""
    try:
        if _connects(probe, "not-the-password"):
            hba = Path(run_sql(admin, "SHOW hba_file")[0][0])
            if not os.access(hba, os.W_OK):
                pytest.skip(f"the test server trusts {role} and its {hba} is not writable here")
            original = hba.read_text()
            rules = "".join(
                f"host all {role} {net} scram-sha-256\n" for net in ("127.0.0.1/32", "::1/128")
            )
            hba.write_text(rules + original)
            run_sql(admin, "SELECT pg_reload_conf()")
            deadline = time.monotonic() + 10
            while _connects(probe, "not-the-password") and time.monotonic() < deadline:
                time.sleep(0.1)  # the postmaster reloads asynchronously
        assert not _connects(probe, "not-the-password"), "the server still trusts the role"
        assert _connects(probe, PASSWORD)
        yield role
    finally:
        if hba is not None:
            hba.write_text(original)
            run_sql(admin, "SELECT pg_reload_conf()")
        run_sql(admin, f"DROP ROLE IF EXISTS {role}")


def test_wrong_password_fails_at_once(
    fresh_database: Callable[..., URL],
    container_env: dict[str, str],
    password_role: str,
) -> None:
    url = fresh_database("rm_pw").set(username=password_role, password=PASSWORD + "-wrong")
    env = {**container_env, "DATABASE_URL": url_string(url)}
    run = run_entrypoint(env, "core")
    line = assert_one_line_failure(
        run, "refused the credentials", password_role, "DATABASE_URL", "password"
    )
    assert "password authentication failed" in line
    assert "-wrong" not in run.output
    # No waiting: MIGRATE_WAIT_TIMEOUT is 30 s, the answer is final.
    assert run.seconds < 15, run.seconds


def test_unreachable_host_gives_up_within_the_timeout(
    container_env: dict[str, str], closed_port: int
) -> None:
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:{closed_port}/core"
    env = {**container_env, "DATABASE_URL": url, "MIGRATE_WAIT_TIMEOUT": "2"}
    run = run_entrypoint(env, "core")
    assert_one_line_failure(
        run, f"127.0.0.1:{closed_port} did not answer within 2 s", "Connection refused",
        "DATABASE_URL", "MIGRATE_WAIT_TIMEOUT",
    )  # fmt: skip
    # It waited (retrying), and stopped at the timeout plus the interpreter's start-up.
    assert 2 <= run.seconds < 2 + 8, run.seconds


def test_missing_database_fails_at_once(
    postgres_server: PostgresServer, container_env: dict[str, str]
) -> None:
    url = postgres_server.admin_url.set(database="runmig_no_such_db", password=PASSWORD)
    env = {**container_env, "BIBIKOS_DATABASE_URL": url_string(url)}
    run = run_entrypoint(env, "bibikos")
    assert_one_line_failure(
        run, 'database "runmig_no_such_db" does not exist', "BIBIKOS_DATABASE_URL"
    )
    assert run.seconds < 15, run.seconds


def test_missing_url_names_the_variable_and_starts_no_server(
    container_env: dict[str, str], tmp_path: Path
) -> None:
    run = run_entrypoint(container_env, "core")
    assert_one_line_failure(run, "DATABASE_URL is not set")
    assert not (tmp_path / ".data").exists(), "the embedded server must never start here"


def test_transaction_pooler_is_refused(
    fresh_database: Callable[..., URL], container_env: dict[str, str]
) -> None:
    url = fresh_database("rm_pool")
    env = {**container_env, "DATABASE_URL": url_string(url), "CORE_DB_PGBOUNCER": "true"}
    run = run_entrypoint(env, "core")
    assert_one_line_failure(run, "CORE_DB_PGBOUNCER", "directly")
    assert tables(url) == set()


def test_unknown_database_name(container_env: dict[str, str]) -> None:
    run = run_entrypoint({**container_env, "MIGRATE_DATABASES": "core,nope"})
    assert_one_line_failure(run, "Unknown database 'nope'", "MIGRATE_DATABASES")


def test_missing_tenant_database_fails_that_tenant_alone(
    fresh_database: Callable[..., URL], postgres_server: PostgresServer,
    container_env: dict[str, str],
) -> None:  # fmt: skip
    bibikos_url = fresh_database("rm_main")
    tenant_ok = fresh_database("rm_t_ok")
    missing = postgres_server.admin_url.set(database="runmig_no_tenant_db")
    env = {
        **container_env,
        "BIBIKOS_DATABASE_URL": url_string(bibikos_url),
        "BIBIKOS_TENANT_URLS": json.dumps({"eu": url_string(missing), "us": url_string(tenant_ok)}),
    }
    run = run_entrypoint(env, "bibikos")
    assert_one_line_failure(run, "1 tenant(s) failed: bibikos tenant eu")
    assert "`db bibikos tenants create eu`" in run.stdout
    assert "bibikos tenant databases: 1 migrated, 0 already at head, 1 failed." in run.stdout
    assert version(tenant_ok) is not None


def test_production_unless_told_otherwise(container_env: dict[str, str]) -> None:
    """With ENVIRONMENT unset a remote deploy is production: placeholder passwords refused."""
    env = {k: v for k, v in container_env.items() if k != "ENVIRONMENT"}
    env["DATABASE_URL"] = "postgresql://migrator:changeme@db.example.com:5432/core"
    run = run_entrypoint(env, "core")
    line = assert_one_line_failure(run, "DATABASE_URL uses a placeholder password in production")
    assert "changeme" not in line
