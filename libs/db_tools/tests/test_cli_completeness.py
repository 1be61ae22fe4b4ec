"""The `db` CLI's repair and review commands on a real PostgreSQL: `--version`, help naming
exit code 3, offline `--sql` scripts in every stream, `stamp` and `merge`.

Revision ids and counts are read from the migration folders, never hard-coded (other
revisions are added to the db libs all the time).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from sqlalchemy.engine import URL
from typer.testing import CliRunner, Result

import bibikos_db
import core_db
from db_kit.config import DatabaseConfig
from db_kit.migrations.migrator import Migrator
from db_kit.settings import DatabaseSettings, settings_config, url_field
from db_tools.cli import build_app, database_app
from db_tools.testing import run_sql as sql


def invoke(*args: str, input: str | None = None) -> Result:
    result = CliRunner().invoke(build_app(), list(args), input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def no_urls(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Production with no database URL at all: only offline commands can work."""
    monkeypatch.setenv("ENVIRONMENT", "production")
    for variable in ("DATABASE_URL", "BIBIKOS_DATABASE_URL"):
        monkeypatch.setenv(variable, "")
    monkeypatch.setenv("BIBIKOS_TENANT_URLS", "{}")
    for config in (core_db.CONFIG, bibikos_db.CONFIG):
        config.reset()
    yield
    for config in (core_db.CONFIG, bibikos_db.CONFIG):
        config.reset()


@pytest.fixture
def bibikos_url(
    database_at_head: Callable[..., URL], monkeypatch: pytest.MonkeyPatch
) -> Iterator[URL]:
    url = database_at_head(bibikos_db.CONFIG)
    monkeypatch.setenv("BIBIKOS_DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.setenv("BIBIKOS_TENANT_URLS", "{}")
    monkeypatch.setenv("ENVIRONMENT", "development")
    bibikos_db.CONFIG.reset()
    yield url
    bibikos_db.CONFIG.reset()


def version_of(url: URL, table: str = "alembic_version") -> list[str]:
    return sorted(str(r[0]) for r in sql(url, f"SELECT version_num FROM {table}"))


# --- db --version and help --------------------------------------------------------------


def test_version_names_db_tools_and_every_installed_database() -> None:
    result = invoke("--version")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("db-tools ")
    assert "db-kit " in result.output
    assert "alembic " in result.output
    assert "core: core-db " in result.output
    assert "bibikos: bibikos-db " in result.output


@pytest.mark.parametrize(
    "command",
    [
        ("core", "status"),
        ("core", "registry", "status"),
        ("core", "tenants", "status"),
        ("bibikos", "status"),
        ("bibikos", "tenants", "status"),
    ],
)
def test_every_command_that_exits_3_says_so_in_its_help(command: tuple[str, ...]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "exit code 3" in text.lower() or "Exit codes: 0" in text, result.output
    assert " 3 " in text


@pytest.mark.parametrize("stream", [("core",), ("core", "registry"), ("bibikos",)])
def test_every_stream_has_stamp_merge_and_sql(stream: tuple[str, ...]) -> None:
    listed = invoke(*stream, "--help").output
    assert "stamp" in listed
    assert "merge" in listed
    for command in ("migrate", "deploy", "downgrade"):
        assert "--sql" in invoke(*stream, command, "--help").output, command


# --- --sql ------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_urls")
def test_offline_scripts_need_no_database_and_start_with_the_timeouts() -> None:
    core_heads = Migrator.offline(core_db.CONFIG).heads()
    for stream, table in (
        (("core",), "CREATE TABLE alembic_version"),
        (("core", "registry"), "CREATE TABLE core.alembic_version"),
        (("bibikos",), "CREATE TABLE alembic_version"),
    ):
        result = invoke(*stream, "migrate", "--sql")
        assert result.exit_code == 0, result.output
        statements = [s.strip() for s in result.stdout.split(";") if s.strip()]
        assert statements[0].startswith("SET lock_timeout = ")
        assert statements[1].startswith("SET statement_timeout = ")
        assert table in result.stdout
        assert "error:" not in result.output
    registry = invoke("core", "registry", "migrate", "--sql").stdout
    assert registry.index('CREATE SCHEMA IF NOT EXISTS "core"') < registry.index("core.alembic")
    # From head: nothing to run but the timeouts and an empty transaction.
    done = invoke("core", "migrate", "--sql", "--from", core_heads[0])
    assert done.exit_code == 0, done.output
    assert "CREATE TABLE" not in done.stdout
    assert done.stdout.lstrip().startswith("SET lock_timeout")
    # downgrade: a FROM:TO range, as Alembic requires offline; allowed in production.
    for bad in ("-1", "base"):
        refused = invoke("bibikos", "downgrade", "--sql", bad)
        assert refused.exit_code == 1
        assert "needs a FROM:TO range" in refused.output
        assert len(refused.output.strip().splitlines()) == 1
    down = invoke("core", "downgrade", "--sql", f"{core_heads[0]}:base")
    assert down.exit_code == 0, down.output
    assert down.stdout.lstrip().startswith("SET lock_timeout")
    assert "DROP TABLE" in down.stdout
    assert "DELETE FROM alembic_version" in down.stdout or "DROP TABLE alembic_version" in (
        down.stdout
    )
    # --from is for offline scripts only.
    assert invoke("core", "migrate", "--from", core_heads[0]).exit_code == 1


def test_deploy_sql_checks_drift_and_applies_nothing(
    fresh_database: Callable[..., URL], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = fresh_database("deploy_sql")
    monkeypatch.setenv("BIBIKOS_DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.setenv("BIBIKOS_TENANT_URLS", "{}")
    monkeypatch.setenv("ENVIRONMENT", "production")
    bibikos_db.CONFIG.reset()
    try:
        result = invoke("bibikos", "deploy", "--sql")
    finally:
        bibikos_db.CONFIG.reset()
    if result.exit_code == 1 and "disagree" in result.output:
        pytest.skip("bibikos models are ahead of its migrations (a revision is being added)")
    assert result.exit_code == 0, result.output
    assert result.stdout.lstrip().startswith("SET lock_timeout")
    assert "CREATE TABLE" in result.stdout
    assert sql(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


# --- stamp ------------------------------------------------------------------------------


def test_stamp_asks_records_and_runs_no_sql(bibikos_url: URL) -> None:
    heads = Migrator(bibikos_db.CONFIG, bibikos_url).heads()
    assert version_of(bibikos_url) == sorted(heads)

    refused = invoke("bibikos", "stamp", "base", input="n\n")
    assert refused.exit_code == 1
    assert "without running any migration" in refused.output
    assert version_of(bibikos_url) == sorted(heads)

    stamped = invoke("bibikos", "stamp", "base", "--yes")
    assert stamped.exit_code == 0, stamped.output
    assert "stamped" in stamped.output
    assert "no SQL ran" in stamped.output
    assert version_of(bibikos_url) == []
    # The tables are all still there: stamping moved only the version.
    assert sql(bibikos_url, "SELECT count(*) FROM gym_classes") == [(0,)]

    unknown = invoke("bibikos", "stamp", "0badc0de", "--yes")
    assert unknown.exit_code == 1
    assert "0badc0de" in unknown.output
    assert len(unknown.output.strip().splitlines()) == 1
    assert version_of(bibikos_url) == []

    back = invoke("bibikos", "stamp", "heads", input="y\n")
    assert back.exit_code == 0, back.output
    assert version_of(bibikos_url) == sorted(heads)

    # A FROM:TO range without --sql is refused: online downgrades read the current revision.
    online = invoke("bibikos", "downgrade", f"{heads[0]}:base", "--yes")
    assert online.exit_code == 1
    assert "add --sql" in online.output
    assert version_of(bibikos_url) == sorted(heads)


def test_stamp_in_production_names_it_in_the_prompt(
    bibikos_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    bibikos_db.CONFIG.reset()
    heads = Migrator(bibikos_db.CONFIG, bibikos_url).heads()
    refused = invoke("bibikos", "stamp", "base", input="n\n")
    assert refused.exit_code == 1
    assert "production" in refused.output.lower()
    assert version_of(bibikos_url) == sorted(heads)
    assert invoke("bibikos", "stamp", "base", "--yes").exit_code == 0
    assert version_of(bibikos_url) == []


# --- merge ------------------------------------------------------------------------------

REVISION = '''"""{message}

Revision ID: {rev}
Revises:
"""

from alembic import op

revision = "{rev}"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE {table} (id int)")


def downgrade() -> None:
    op.execute("DROP TABLE {table}")
'''


class MergeSettings(DatabaseSettings):
    model_config = settings_config(env_prefix="MERGE_DB_")
    url_variable: ClassVar[str] = "MERGE_DATABASE_URL"
    embedded_database: ClassVar[str] = "merge"
    url: str | None = url_field("MERGE_DATABASE_URL")


def test_merge_joins_two_heads_into_one_that_migrates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_database: Callable[..., URL]
) -> None:
    package = f"merge_db_{uuid.uuid4().hex[:8]}"
    pkg = tmp_path / package
    versions = pkg / "migrations" / "versions"
    versions.mkdir(parents=True)
    for path in (pkg / "__init__.py", pkg / "migrations" / "__init__.py"):
        path.write_text("")
    (pkg / "models.py").write_text(
        "from sqlalchemy.orm import DeclarativeBase\n\n\nclass Base(DeclarativeBase):\n    pass\n"
    )
    (pkg / "migrations" / "env.py").write_text(
        f'from db_kit.migrations.env import run_env\n\nrun_env("{package}:CONFIG")\n'
    )
    shutil.copy(core_db.CONFIG.migrations_dir / "script.py.mako", pkg / "migrations")
    for rev, table in (("aaaa0001", "left_branch"), ("bbbb0002", "right_branch")):
        (versions / f"{rev}.py").write_text(REVISION.format(message=table, rev=rev, table=table))
    monkeypatch.syspath_prepend(str(tmp_path))
    url = fresh_database("merge")
    monkeypatch.setenv("MERGE_DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.setenv("ENVIRONMENT", "development")
    config = DatabaseConfig(
        name="merge",
        settings_class=MergeSettings,
        models=f"{package}.models",
        migrations=f"{package}.migrations",
    )
    app = database_app(config)
    assert sorted(Migrator(config).heads()) == ["aaaa0001", "bbbb0002"]

    merged = CliRunner().invoke(app, ["merge", "-m", "join branches"])
    assert merged.exit_code == 0, merged.output
    assert "Wrote merge revision" in merged.output
    assert "aaaa0001, bbbb0002" in merged.output
    heads = Migrator(config).heads()
    assert len(heads) == 1
    assert heads[0] not in ("aaaa0001", "bbbb0002")
    assert len(list(versions.glob("*.py"))) == 3

    again = CliRunner().invoke(app, ["merge", "-m", "again"])
    assert again.exit_code == 1
    assert "nothing to merge" in again.output
    assert len(list(versions.glob("*.py"))) == 3

    migrated = CliRunner().invoke(app, ["migrate"])
    assert migrated.exit_code == 0, migrated.output
    assert version_of(url) == list(heads)
    assert sql(url, "SELECT count(*) FROM left_branch") == [(0,)]
    assert sql(url, "SELECT count(*) FROM right_branch") == [(0,)]
