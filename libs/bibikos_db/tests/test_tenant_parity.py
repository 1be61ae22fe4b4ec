"""bibikos (database-per-tenant) at parity with core's tenant commands, on a real PostgreSQL:
`db bibikos tenants status` (exit 3), `db bibikos seed --tenant`, `db bibikos migrate`
covering every tenant database, and `tenants migrate --tenant`.

The tenant map is ``BIBIKOS_TENANT_URLS`` naming fresh databases of the test server.
Revision ids are read from the migrations folder, never hard-coded.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.engine import URL
from typer.testing import CliRunner, Result

from bibikos_db import CONFIG
from db_kit.migrations.migrator import Migrator
from db_tools.testing import PostgresServer
from db_tools.testing import run_sql as sql


def invoke(*args: str, input: str | None = None) -> Result:
    from db_tools.cli import build_app

    result = CliRunner().invoke(build_app(), ["bibikos", *args], input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def version(url: URL) -> str | None:
    rows = sql(url, "SELECT to_regclass('public.alembic_version') IS NOT NULL")
    if not rows[0][0]:
        return None
    found = sql(url, "SELECT version_num FROM alembic_version")
    return str(found[0][0]) if found else None


def set_tenants(monkeypatch: pytest.MonkeyPatch, urls: dict[str, URL]) -> None:
    monkeypatch.setenv(
        "BIBIKOS_TENANT_URLS",
        json.dumps({s: u.render_as_string(hide_password=False) for s, u in urls.items()}),
    )
    CONFIG.reset()


@pytest.fixture
def fleet(
    fresh_database: Callable[..., URL],
    database_at_head: Callable[..., URL],
    postgres_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, URL]]:
    """A main database with nothing applied; tenants us (at head), eu (empty) and mars
    (named in the map, its database never created)."""
    main = fresh_database("bibikos_main")
    missing = f"bibikos_missing_{uuid.uuid4().hex[:8]}"
    postgres_server.created.append(missing)
    urls = {
        "us": database_at_head(CONFIG),
        "eu": fresh_database("bibikos_eu"),
        "mars": postgres_server.admin_url.set(database=missing),
    }
    monkeypatch.setenv("BIBIKOS_DATABASE_URL", main.render_as_string(hide_password=False))
    monkeypatch.setenv("ENVIRONMENT", "development")
    set_tenants(monkeypatch, urls)
    yield {"main": main, **urls}
    CONFIG.reset()


def test_tenants_status_exit_3_then_migrate_covers_every_tenant_database(
    fleet: dict[str, URL], monkeypatch: pytest.MonkeyPatch
) -> None:
    head = Migrator(CONFIG, fleet["us"]).heads()[0]

    status = invoke("tenants", "status")
    assert status.exit_code == 3, status.output
    assert "3 tenant database(s) in BIBIKOS_TENANT_URLS" in status.output
    assert "2 not at head" in status.output
    text = " ".join(status.output.split())
    assert "up to date" in text
    assert "pending" in text
    assert "missing" in text

    # db bibikos migrate: the main database, then each tenant database; mars fails, exit 1.
    migrated = invoke("migrate")
    assert migrated.exit_code == 1, migrated.output
    assert "bibikos: upgraded" in migrated.output
    assert "mars: failed" in migrated.output
    assert "1 migrated, 1 already at head, 1 failed" in migrated.output
    assert version(fleet["main"]) == head
    assert version(fleet["eu"]) == head

    # Without mars in the map every tenant database is at head: status exits 0.
    set_tenants(monkeypatch, {"us": fleet["us"], "eu": fleet["eu"]})
    done = invoke("tenants", "status")
    assert done.exit_code == 0, done.output
    assert "2 tenant database(s) in BIBIKOS_TENANT_URLS" in done.output
    assert "0 not at head" in done.output
    again = invoke("migrate")
    assert again.exit_code == 0, again.output
    assert "already at head" in again.output
    assert "0 migrated, 2 already at head, 0 failed" in again.output
    # The database's own status counts its tenant databases too.
    overall = invoke("status")
    assert "tenants: 2 database(s), 0 not at head" in overall.output


def test_tenants_migrate_one_or_several_and_unknown_migrates_nothing(
    fleet: dict[str, URL], fresh_database: Callable[..., URL], monkeypatch: pytest.MonkeyPatch
) -> None:
    head = Migrator(CONFIG, fleet["us"]).heads()[0]
    apac = fresh_database("bibikos_apac")
    set_tenants(monkeypatch, {"us": fleet["us"], "eu": fleet["eu"], "apac": apac})

    unknown = invoke("tenants", "migrate", "--tenant", "eu", "--tenant", "nope")
    assert unknown.exit_code == 1
    assert "unknown tenant nope" in unknown.output
    assert "nothing was migrated" in unknown.output
    assert len(unknown.output.strip().splitlines()) == 1
    assert version(fleet["eu"]) is None

    bad = invoke("tenants", "migrate", "--tenant", "a;b")
    assert bad.exit_code == 1
    assert "Invalid tenant slug" in bad.output

    one = invoke("tenants", "migrate", "--tenant", "eu")
    assert one.exit_code == 0, one.output
    assert "1 migrated, 0 already at head, 0 failed" in one.output
    assert version(fleet["eu"]) == head
    assert version(apac) is None

    several = invoke("tenants", "migrate", "--tenant", "apac", "--tenant", "us")
    assert several.exit_code == 0, several.output
    assert "1 migrated, 1 already at head, 0 failed" in several.output
    assert version(apac) == head


def test_seed_one_tenant_database(fleet: dict[str, URL], monkeypatch: pytest.MonkeyPatch) -> None:
    set_tenants(monkeypatch, {"us": fleet["us"], "eu": fleet["eu"], "mars": fleet["mars"]})
    assert invoke("migrate", "--help").exit_code == 0
    Migrator(CONFIG, fleet["eu"]).upgrade()
    Migrator(CONFIG, fleet["main"]).upgrade()

    seeded = invoke("seed", "--tenant", "us")
    assert seeded.exit_code == 0, seeded.output
    assert "seeded tenant us" in seeded.output
    assert sql(fleet["us"], "SELECT count(*) FROM gym_classes") == [(1,)]
    assert sql(fleet["eu"], "SELECT count(*) FROM gym_classes") == [(0,)]
    assert sql(fleet["main"], "SELECT count(*) FROM gym_classes") == [(0,)]
    # Idempotent, like the main database's seed.
    assert invoke("seed", "--tenant", "us").exit_code == 0
    assert sql(fleet["us"], "SELECT count(*) FROM gym_classes") == [(1,)]

    unknown = invoke("seed", "--tenant", "nope")
    assert unknown.exit_code == 1
    assert "'nope' was not found" in unknown.output
    missing = invoke("seed", "--tenant", "mars")
    assert missing.exit_code == 1
    assert "does not exist; create it with `db bibikos tenants create mars`" in missing.output
    bad = invoke("seed", "--tenant", "x;drop")
    assert bad.exit_code == 1
    assert "Invalid tenant slug" in bad.output
