"""`db core tenants migrate --tenant SLUG` on a real PostgreSQL: one or several tenant
schemas, and an unknown slug migrates nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.engine import URL
from typer.testing import CliRunner, Result

import core_db
from core_db.config import REGISTRY
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.schema_tenants import SchemaTenantMigrator
from db_tools.cli import build_app
from db_tools.testing import run_sql as sql

SLUGS = ("acme", "globex", "initech")


@pytest.fixture
def behind(fresh_database: Callable[..., URL], monkeypatch: pytest.MonkeyPatch) -> Iterator[URL]:
    """A core database whose three tenants' schemas were emptied (all behind head)."""
    url = fresh_database("tenant_select")
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    core_db.CONFIG.reset()
    Migrator(REGISTRY, url).upgrade()
    Migrator(core_db.CONFIG, url).upgrade()
    tenants = SchemaTenantMigrator(core_db.CONFIG, url)
    for slug in SLUGS:
        tenants.create(slug)
        sql(url, f"DROP SCHEMA tenant_{slug} CASCADE")
        sql(url, f"CREATE SCHEMA tenant_{slug}")
    yield url
    core_db.CONFIG.reset()


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(build_app(), ["core", "tenants", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def at_head(url: URL, slug: str) -> bool:
    found = sql(url, f"SELECT to_regclass('tenant_{slug}.alembic_version') IS NOT NULL")
    return bool(found[0][0])


def test_migrate_only_the_tenants_named(behind: URL) -> None:
    unknown = invoke("migrate", "--tenant", "acme", "--tenant", "nope", "--tenant", "nada")
    assert unknown.exit_code == 1
    assert "unknown tenants nope, nada" in unknown.output
    assert "nothing was migrated" in unknown.output
    assert len(unknown.output.strip().splitlines()) == 1
    assert not any(at_head(behind, s) for s in SLUGS)

    bad = invoke("migrate", "--tenant", "public")
    assert bad.exit_code == 1
    assert not any(at_head(behind, s) for s in SLUGS)

    one = invoke("migrate", "--tenant", "acme")
    assert one.exit_code == 0, one.output
    assert "1 migrated, 0 already at head, 0 failed" in one.output
    assert [at_head(behind, s) for s in SLUGS] == [True, False, False]

    several = invoke("migrate", "--tenant", "acme", "--tenant", "initech", "--verify")
    assert several.exit_code == 0, several.output
    assert "1 migrated, 1 already at head, 0 failed" in several.output
    assert [at_head(behind, s) for s in SLUGS] == [True, False, True]

    status = invoke("status")
    assert status.exit_code == 3
    assert "3 tenant(s), 1 not at head" in status.output
    everyone = invoke("migrate")
    assert everyone.exit_code == 0, everyone.output
    assert all(at_head(behind, s) for s in SLUGS)
