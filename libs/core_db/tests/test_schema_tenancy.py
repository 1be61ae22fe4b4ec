"""Schema-per-tenant on core_db against a real PostgreSQL: isolation, provisioning, migrations."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import URL
from typer.testing import CliRunner

import core_db
from auth.service import AuthService
from auth.tables import AuthUserTable
from core_db import CoreSettings
from core_db.config import REGISTRY
from db_kit.database import SQLAlchemyDatabase
from db_kit.migrations.env import LOCK_CLASS, lock_key
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.schema_tenants import ALL_TENANTS_LOCK, SchemaTenantMigrator
from db_shared import DuplicateEntryError
from db_shared.tenancy import InvalidTenantError, TenantRequiredError, tenant_context
from db_tools.cli import build_app
from db_tools.testing import run_sql as sql


@pytest.fixture
def tenant_db(fresh_database: Callable[..., URL], monkeypatch: pytest.MonkeyPatch) -> Iterator[URL]:
    """A core database with its registry, the default schema and tenants acme and globex."""
    url = fresh_database("tenancy")
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    core_db.CONFIG.reset()
    Migrator(REGISTRY, url).upgrade()
    Migrator(core_db.CONFIG, url).upgrade()
    tenants = SchemaTenantMigrator(core_db.CONFIG, url)
    for slug in ("acme", "globex"):
        result = tenants.create(slug)
        assert result.seconds < 1.0, f"provisioning {slug} took {result.seconds:.2f}s"
    yield url
    core_db.CONFIG.reset()


def database(url: URL, **settings: object) -> SQLAlchemyDatabase:
    return SQLAlchemyDatabase(
        core_db.CONFIG, settings=CoreSettings(**settings), url=url, multi_tenant=True
    )


def test_identical_primary_keys_never_cross(tenant_db: URL) -> None:
    db = database(tenant_db)
    User = db.model(AuthUserTable)

    async def scenario() -> None:
        service = AuthService(db)
        for slug in ("acme", "globex"):
            with tenant_context(slug):
                user = await service.register(f"owner@{slug}.example", "long enough 1")
                assert user.id == 1  # the same primary key in both tenants

        async def visit(i: int) -> None:
            slug = ("acme", "globex")[i % 2]
            with tenant_context(slug):
                await asyncio.sleep(0)
                await service.register(f"user{i}@{slug}.example", "long enough 1")
                await asyncio.sleep(0.001 * (i % 3))
                async with db.session() as s:
                    emails = list(await s.scalars(select(User.email)))
                assert emails, slug
                assert all(e.endswith(f"@{slug}.example") for e in emails), (slug, emails)

        await asyncio.gather(*(visit(i) for i in range(40)))
        await db.dispose()

    asyncio.run(scenario())
    per_schema = {
        schema: sql(tenant_db, f"SELECT count(*) FROM {schema}.auth_users")[0][0]
        for schema in ("tenant_acme", "tenant_globex", "public")
    }
    assert per_schema == {"tenant_acme": 21, "tenant_globex": 21, "public": 0}


def test_one_pooled_connection_alternating_tenants_even_after_errors(tenant_db: URL) -> None:
    db = database(tenant_db, pool_size=1, max_overflow=0)
    User = db.model(AuthUserTable)
    for slug in ("acme", "globex"):
        with tenant_context(slug), db.sync_session() as s:
            s.add(User(email=f"only@{slug}.example"))
    for round_ in range(10):
        for slug in ("acme", "globex"):
            with tenant_context(slug):
                if round_ % 3 == 0:
                    with pytest.raises(DuplicateEntryError), db.sync_session() as s:
                        s.add(User(email=f"only@{slug}.example"))
                with db.sync_session() as s:
                    assert list(s.scalars(select(User.email))) == [f"only@{slug}.example"]
                    schema = s.execute(text("SELECT current_schemas(false)")).scalar_one()
                    assert "tenant_" not in str(schema)  # nothing set on the connection
    assert db.engines.sync_engine.pool.checkedout() == 0
    # ... with the memoised schema translation (engine.cache_schema_translation) in the path.
    preparer = db.engines.sync_engine.dialect.identifier_preparer
    assert getattr(type(preparer), "_db_kit_cached", False)
    db.dispose_sync()


def test_no_tenant_is_an_error_never_the_default_schema(tenant_db: URL) -> None:
    db = database(tenant_db)
    with pytest.raises(TenantRequiredError) as info, db.sync_session() as s:
        s.scalar(select(func.count()).select_from(db.model(AuthUserTable)))
    assert "tenant_context" in str(info.value)
    db.dispose_sync()


@pytest.mark.parametrize(
    "slug",
    [
        'x";DROP SCHEMA core;--',
        "a,public",
        "pg_catalog",
        "a" * 64,
        "Acme",
        "a'b",
        "public",
        "core",
        "",
    ],
)
def test_malicious_slugs_are_refused_before_any_sql(slug: str) -> None:
    # The URL points nowhere: reaching the database would raise DatabaseUnavailableError.
    nowhere = URL.create("postgresql+psycopg", host="127.0.0.1", port=1, database="x")
    with pytest.raises(InvalidTenantError):
        SchemaTenantMigrator(core_db.CONFIG, nowhere).create(slug)
    with pytest.raises(InvalidTenantError):
        SchemaTenantMigrator(core_db.CONFIG, nowhere).drop(slug)


def _reset_schema(url: URL, schema: str, *, poison: bool = False) -> None:
    sql(url, f"DROP SCHEMA {schema} CASCADE")
    sql(url, f"CREATE SCHEMA {schema}")
    if poison:  # the initial revision's CREATE TABLE auth_users will fail here
        sql(url, f"CREATE TABLE {schema}.auth_users (id int)")


def test_failing_tenant_is_reported_others_reach_head_and_a_rerun_resumes(tenant_db: URL) -> None:
    tenants = SchemaTenantMigrator(core_db.CONFIG, tenant_db)
    tenants.create("initech")
    head = tenants.head()
    _reset_schema(tenant_db, "tenant_acme")
    _reset_schema(tenant_db, "tenant_initech")
    _reset_schema(tenant_db, "tenant_globex", poison=True)

    runner = CliRunner()
    result = runner.invoke(build_app(), ["core", "tenants", "migrate", "--workers", "2"])
    assert result.exit_code == 1, result.output
    assert "1 failed" in result.output
    assert "2 migrated" in result.output
    assert "globex" in result.output
    with tenants.connect() as conn:
        versions = tenants.versions(conn, ["tenant_acme", "tenant_globex", "tenant_initech"])
    assert versions == {"tenant_acme": head, "tenant_globex": None, "tenant_initech": head}
    # The failed tenant's transaction left nothing behind.
    assert sql(
        tenant_db,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'tenant_globex'",
    ) == [(1,)]

    summary = runner.invoke(build_app(), ["core", "status"])
    assert summary.exit_code == 3
    assert "tenants: 3, 1 not at head" in summary.output

    status = runner.invoke(build_app(), ["core", "tenants", "status"])
    assert status.exit_code == 3
    assert "failed" in status.output
    assert "auth_users" in status.output  # the reason: the relation already exists

    sql(tenant_db, "DROP TABLE tenant_globex.auth_users")
    again = runner.invoke(build_app(), ["core", "tenants", "migrate"])
    assert again.exit_code == 0, again.output
    assert "1 migrated, 2 already at head, 0 failed" in again.output
    assert runner.invoke(build_app(), ["core", "tenants", "status"]).exit_code == 0


def test_concurrent_tenant_migrations_serialize(tenant_db: URL) -> None:
    for schema in ("tenant_acme", "tenant_globex"):
        _reset_schema(tenant_db, schema)
    env = {**os.environ, "DATABASE_URL": tenant_db.render_as_string(hide_password=False)}
    engine = create_engine(tenant_db)
    holder = engine.connect()
    key = lock_key(ALL_TENANTS_LOCK, "*")
    holder.execute(text("SELECT pg_advisory_lock(:c, :k)"), {"c": LOCK_CLASS, "k": key})
    holder.commit()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "db_tools", "core", "tenants", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 60
        waiting = 0
        while time.monotonic() < deadline and waiting < 2:
            waiting = holder.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = :k"
                ),
                {"k": key},
            ).scalar_one()
            holder.commit()
            time.sleep(0.1)
        assert waiting == 2
    finally:
        holder.execute(text("SELECT pg_advisory_unlock(:c, :k)"), {"c": LOCK_CLASS, "k": key})
        holder.commit()
        holder.close()
        engine.dispose()
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    summaries = sorted(o.strip().splitlines()[-1] for o in outputs)
    assert summaries == [
        "core tenants: 0 migrated, 2 already at head, 0 failed.",
        "core tenants: 2 migrated, 0 already at head, 0 failed.",
    ], outputs


def test_status_without_a_registry_says_to_migrate(
    fresh_database: Callable[..., URL], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = fresh_database("no_registry")
    Migrator(core_db.CONFIG, url).upgrade()
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    core_db.CONFIG.reset()
    try:
        result = CliRunner().invoke(build_app(), ["core", "status"])
    finally:
        core_db.CONFIG.reset()
    assert result.exit_code == 3, result.output
    assert "no registry yet (run `db core migrate`)" in result.output


def test_seed_a_tenant_schema(tenant_db: URL) -> None:
    runner = CliRunner()
    result = runner.invoke(build_app(), ["core", "seed", "--tenant", "acme"])
    assert result.exit_code == 0, result.output
    assert "seeded tenant acme" in result.output
    assert sql(tenant_db, "SELECT count(*) FROM tenant_acme.roles") == [(2,)]
    assert sql(tenant_db, "SELECT count(*) FROM tenant_globex.roles") == [(0,)]
    assert sql(tenant_db, "SELECT count(*) FROM public.roles") == [(0,)]
    missing = runner.invoke(build_app(), ["core", "seed", "--tenant", "nope"])
    assert missing.exit_code == 1
    assert "tenant 'nope' was not found" in missing.output
    bad = runner.invoke(build_app(), ["core", "seed", "--tenant", "a,public"])
    assert bad.exit_code == 1
    assert sql(tenant_db, "SELECT count(*) FROM public.roles") == [(0,)]


def test_helper_processes_share_the_queue_with_this_one(tenant_db: URL) -> None:
    tenants = SchemaTenantMigrator(core_db.CONFIG, tenant_db)
    slugs = [f"bulk{i}" for i in range(8)]
    for slug in slugs:
        tenants.create(slug)
    for slug in ("acme", "globex", *slugs):
        _reset_schema(tenant_db, f"tenant_{slug}")
    results = tenants.migrate_all(workers=3, min_per_helper=1)
    migrated = [r for r in results if r.status == "migrated"]
    assert len(migrated) == 10, results
    assert {r.after for r in migrated} == {tenants.head()}
    helpers = {r.pid for r in migrated} - {os.getpid()}
    assert helpers, "no tenant was migrated by a helper process"
    assert len(helpers) <= 2
    # Nothing left to do, and nothing started for it.
    again = tenants.migrate_all(workers=3, min_per_helper=1)
    assert {r.status for r in again} == {"up to date"}


def test_registry_fast_path_and_verify(tenant_db: URL) -> None:
    """Tenants the registry records at head are skipped without reading their version table;
    a schema changed behind the runner's back is caught by status and by --verify."""
    # acme restored "from an old backup": tables gone, version table empty.
    sql(tenant_db, "DROP SCHEMA tenant_acme CASCADE")
    sql(tenant_db, "CREATE SCHEMA tenant_acme")
    sql(tenant_db, "CREATE TABLE tenant_acme.alembic_version (version_num varchar(32) PRIMARY KEY)")
    runner = CliRunner()
    trusting = runner.invoke(build_app(), ["core", "tenants", "migrate"])
    assert trusting.exit_code == 0, trusting.output
    assert "0 migrated, 2 already at head" in trusting.output  # the documented blind spot
    status = runner.invoke(build_app(), ["core", "tenants", "status"])
    assert status.exit_code == 3, status.output  # status reads the version tables
    verified = runner.invoke(build_app(), ["core", "tenants", "migrate", "--verify"])
    assert verified.exit_code == 0, verified.output
    assert "1 migrated, 1 already at head" in verified.output
    assert sql(tenant_db, "SELECT count(*) FROM tenant_acme.auth_users") == [(0,)]
    # A schema whose version table is gone is never trusted, --verify or not.
    sql(tenant_db, "DROP SCHEMA tenant_globex CASCADE")
    sql(tenant_db, "CREATE SCHEMA tenant_globex")
    again = runner.invoke(build_app(), ["core", "tenants", "migrate"])
    assert "1 migrated, 1 already at head" in again.output, again.output
