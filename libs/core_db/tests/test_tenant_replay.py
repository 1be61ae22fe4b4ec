"""Tenant upgrades rendered once and replayed per schema (``SchemaTenantMigrator._replay``)
against a real PostgreSQL: the same result as Alembic online, revisions that read the
database still run online, a moved version or a failing revision handled as before."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

import core_db
from core_db import CoreSettings
from core_db.config import REGISTRY
from db_kit.config import DatabaseConfig
from db_kit.migrations.env import LOCK_CLASS, lock_key
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.outcome import TenantReport
from db_kit.migrations.schema_tenants import SchemaTenantMigrator
from db_tools.testing import run_sql as sql

REVISION = '''"""{doc}

Revision ID: {revision}
Revises: {down}
"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
{body}


def downgrade() -> None:
    pass
'''

# Literals a renderer could get wrong: a percent sign, a backslash, a quote.
PURE = """\
    op.add_column(
        "auth_users",
        sa.Column("note", sa.Text(), server_default="50% off \\\\ it's", nullable=True),
    )
    op.create_index("ix_auth_users_note", "auth_users", ["note"])
    op.create_table(
        "replay_things",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("label", sa.String(20), nullable=False, server_default="a%b"),
    )
    op.execute("INSERT INTO replay_things (id, label) VALUES (1, '100% \\\\ sure')")"""

# Reads the tenant's own tables: must run online, per tenant.
READS = """\
    bind = op.get_bind()
    n = bind.execute(
        sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
    ).scalar()
    op.execute(f"COMMENT ON TABLE auth_users IS 'tables: {n}'")"""


@pytest.fixture
def tenant_db(fresh_database: Callable[..., URL], monkeypatch: pytest.MonkeyPatch) -> Iterator[URL]:
    url = fresh_database("replay")
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    core_db.CONFIG.reset()
    Migrator(REGISTRY, url).upgrade()
    tenants = SchemaTenantMigrator(core_db.CONFIG, url)
    for slug in ("acme", "globex", "initech"):
        tenants.create(slug)
    yield url
    core_db.CONFIG.reset()


def with_revisions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bodies: list[str]
) -> tuple[DatabaseConfig, list[str]]:
    """core_db's config over a copy of its migrations plus one revision per body."""
    package = f"replay_{uuid.uuid4().hex[:8]}"
    root = tmp_path / package
    root.mkdir()
    (root / "__init__.py").write_text("")
    shutil.copytree(
        core_db.CONFIG.migrations_dir,
        root / "migrations",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    down = SchemaTenantMigrator(core_db.CONFIG).head()
    revisions = []
    for i, body in enumerate(bodies):
        revision = f"replay{i:04d}{uuid.uuid4().hex[:6]}"
        (root / "migrations" / "versions" / f"{revision}.py").write_text(
            REVISION.format(doc=f"replay test {i}", revision=revision, down=down, body=body)
        )
        revisions.append(revision)
        down = revision
    monkeypatch.syspath_prepend(str(tmp_path))
    config = DatabaseConfig(
        name="core",
        settings_class=CoreSettings,
        models="core_db.models",
        migrations=f"{package}.migrations",
        tenancy=core_db.CONFIG.tenancy,
    )
    return config, revisions


def shape(url: URL, schema: str) -> list[tuple[object, ...]]:
    """Columns with their defaults, indexes and rows of the revision's table."""
    columns = sql(
        url,
        "SELECT table_name, column_name, data_type, column_default, is_nullable "
        f"FROM information_schema.columns WHERE table_schema = '{schema}' ORDER BY 1, 2",
    )
    indexes = sql(
        url,
        "SELECT tablename, indexname, indexdef FROM pg_indexes "
        f"WHERE schemaname = '{schema}' ORDER BY 1, 2",
    )
    rows = sql(url, f"SELECT id, label FROM {schema}.replay_things ORDER BY id")
    return [
        tuple(v.replace(schema, "S") if isinstance(v, str) else v for v in row)
        for row in [*columns, *indexes, *rows]
    ]


def registry(url: URL, slug: str) -> tuple[object, ...]:
    (row,) = sql(
        url, f"SELECT status, revision, last_error FROM core.tenants WHERE slug = '{slug}'"
    )
    return tuple(row)


def test_replayed_upgrade_is_what_alembic_does_online(
    tenant_db: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, (revision,) = with_revisions(tmp_path, monkeypatch, [PURE])
    tenants = SchemaTenantMigrator(config, tenant_db)
    before = SchemaTenantMigrator(core_db.CONFIG, tenant_db).head()
    with tenants.connect() as conn:
        replay = tenants._replay(conn, before)
        assert replay is not None
        assert replay.revisions == (revision,)
        rows = {r.slug: r for r in tenants.tenants(conn)}
        conn.rollback()
        # globex through Alembic online, as before replays existed
        with conn.begin():
            tenants._upgrade(conn, "tenant_globex", before, record="globex", replay=False)
    results = tenants.migrate_all(only=["acme", "initech"])
    assert {r.slug: r.status for r in results} == {"acme": "migrated", "initech": "migrated"}, (
        results
    )
    online = shape(tenant_db, "tenant_globex")
    assert ("auth_users", "note", "text", "'50% off \\ it''s'::text", "YES") in online
    assert (1, "100% \\ sure") in online
    assert shape(tenant_db, "tenant_acme") == online
    assert shape(tenant_db, "tenant_initech") == online
    for slug in ("acme", "globex", "initech"):
        assert sql(tenant_db, f"SELECT version_num FROM tenant_{slug}.alembic_version") == [
            (revision,)
        ]
        assert registry(tenant_db, slug) == ("active", revision, None)
    assert rows["acme"].revision == before

    # A new tenant is provisioned by replaying every revision from base: the same schema.
    tenants.create("hooli")
    with tenants.connect() as conn:
        assert tenants._replay(conn, None) is not None
    assert shape(tenant_db, "tenant_hooli") == online
    assert registry(tenant_db, "hooli") == ("active", revision, None)


def test_a_revision_reading_the_database_runs_online_per_tenant(
    tenant_db: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = with_revisions(tmp_path, monkeypatch, [READS])
    tenants = SchemaTenantMigrator(config, tenant_db)
    sql(tenant_db, "CREATE TABLE tenant_globex.extra (id int)")
    with tenants.connect() as conn:
        assert tenants._replay(conn, SchemaTenantMigrator(core_db.CONFIG).head()) is None
    results = tenants.migrate_all()
    assert {r.status for r in results} == {"migrated"}
    comments = {
        slug: sql(tenant_db, f"SELECT obj_description('tenant_{slug}.auth_users'::regclass)")
        for slug in ("acme", "globex")
    }
    tables = sql(tenant_db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'tenant_acme'")
    assert comments["acme"] == [(f"tables: {tables[0][0]}",)]
    assert comments["globex"] == [(f"tables: {tables[0][0] + 1}",)]


def test_a_version_moved_since_the_plan_is_migrated_from_where_it_is(
    tenant_db: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, (first, second) = with_revisions(
        tmp_path, monkeypatch, [PURE, '    op.add_column("auth_users", sa.Column("x", sa.Text()))']
    )
    tenants = SchemaTenantMigrator(config, tenant_db)
    before = SchemaTenantMigrator(core_db.CONFIG).head()
    with tenants.connect() as conn:
        rows = {r.slug: r for r in tenants.tenants(conn)}
        conn.rollback()
        with conn.begin():  # acme moves on behind the plan's back
            tenants._upgrade(conn, "tenant_acme", before, record="acme", replay=False)
        conn.execute(text(f"UPDATE tenant_acme.alembic_version SET version_num = '{first}'"))
        conn.commit()
        sql(tenant_db, "ALTER TABLE tenant_acme.auth_users DROP COLUMN x")
        result = tenants.migrate_one(conn, rows["acme"], before)
    assert result.status == "migrated", result
    assert result.after == second
    assert sql(tenant_db, "SELECT version_num FROM tenant_acme.alembic_version") == [(second,)]
    assert registry(tenant_db, "acme") == ("active", second, None)

    # The registry claims globex is further on than it is: the upgrade reads the version
    # table under the lock and starts from there.
    sql(tenant_db, f"UPDATE core.tenants SET revision = '{first}' WHERE slug = 'globex'")
    results = {r.slug: r for r in tenants.migrate_all()}
    assert results["globex"].status == "migrated", results
    assert results["acme"].status == "up to date"
    for slug in ("globex", "initech"):
        assert sql(tenant_db, f"SELECT version_num FROM tenant_{slug}.alembic_version") == [
            (second,)
        ]
        assert registry(tenant_db, slug) == ("active", second, None)
    assert sql(
        tenant_db,
        "SELECT count(*) FROM information_schema.columns "
        "WHERE table_schema = 'tenant_globex' AND column_name IN ('note', 'x')",
    ) == [(2,)]


def test_a_failing_replayed_revision_is_named_rolled_back_and_resumed(
    tenant_db: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, (revision,) = with_revisions(tmp_path, monkeypatch, [PURE])
    tenants = SchemaTenantMigrator(config, tenant_db)
    before = SchemaTenantMigrator(core_db.CONFIG).head()
    sql(tenant_db, "CREATE TABLE tenant_globex.replay_things (id int)")  # in the way
    results = {r.slug: r for r in tenants.migrate_all()}
    assert results["acme"].status == results["initech"].status == "migrated"
    failed = results["globex"]
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.startswith(f"revision {revision} ('replay test 0') failed:"), failed.error
    assert "replay_things" in failed.error
    # Nothing of the revision is left in globex, its version and registry row say so.
    assert sql(tenant_db, "SELECT version_num FROM tenant_globex.alembic_version") == [(before,)]
    assert sql(
        tenant_db,
        "SELECT count(*) FROM information_schema.columns "
        "WHERE table_schema = 'tenant_globex' AND column_name = 'note'",
    ) == [(0,)]
    status, recorded, error = registry(tenant_db, "globex")
    assert (status, recorded) == ("active", before)
    assert error == failed.error
    sql(tenant_db, "DROP TABLE tenant_globex.replay_things")
    again = {r.slug: r.status for r in tenants.migrate_all()}
    assert again == {"acme": "up to date", "globex": "migrated", "initech": "up to date"}
    assert registry(tenant_db, "globex") == ("active", revision, None)


def test_a_tenant_locked_elsewhere_is_waited_for_then_migrated(
    tenant_db: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, (revision,) = with_revisions(tmp_path, monkeypatch, [PURE])
    tenants = SchemaTenantMigrator(config, tenant_db)
    key = lock_key(config.version_table, "tenant_acme")
    engine = create_engine(tenant_db)
    results: list[TenantReport] = []
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:c, :k)"), {"c": LOCK_CLASS, "k": key})
        holder.commit()
        worker = threading.Thread(target=lambda: results.extend(tenants.migrate_all()))
        worker.start()
        deadline = time.monotonic() + 30
        waiting = 0
        while waiting == 0 and time.monotonic() < deadline:
            waiting = holder.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND NOT granted AND objid = :k"
                ),
                {"k": key},
            ).scalar_one()
            holder.commit()
            time.sleep(0.05)
        assert waiting == 1  # the replay's guard found the lock busy; Alembic waits for it
        assert sql(tenant_db, "SELECT version_num FROM tenant_acme.alembic_version") != [
            (revision,)
        ]
        holder.execute(text("SELECT pg_advisory_unlock(:c, :k)"), {"c": LOCK_CLASS, "k": key})
        holder.commit()
        worker.join(timeout=60)
    engine.dispose()
    assert {r.slug: r.status for r in results} == {
        "acme": "migrated",
        "globex": "migrated",
        "initech": "migrated",
    }
    assert registry(tenant_db, "acme") == ("active", revision, None)
    assert shape(tenant_db, "tenant_acme") == shape(tenant_db, "tenant_globex")
