"""The `db` CLI end to end on a throwaway database library with its own migrations folder.

A demo package is written to a temporary folder so generating revisions never touches the
repository's migrations.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest
import typer
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL
from typer.testing import CliRunner

import core_db
from db_kit.config import DatabaseConfig
from db_kit.migrations.env import LOCK_CLASS, lock_key
from db_kit.settings import DatabaseSettings, settings_config, url_field
from db_tools.cli import database_app

MODELS_V1 = """
from sqlalchemy import BigInteger, Identity, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db_kit.models import new_metadata


class Base(DeclarativeBase):
    metadata = new_metadata()


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
"""

MODELS_V2 = (
    MODELS_V1
    + """    price_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
"""
)


class DemoSettings(DatabaseSettings):
    model_config = settings_config(env_prefix="DEMO_DB_")
    url_variable: ClassVar[str] = "DEMO_DATABASE_URL"
    embedded_database: ClassVar[str] = "demo"
    url: str | None = url_field("DEMO_DATABASE_URL")


class DemoLib:
    """A database library written to disk: models v1/v2 and an empty migrations folder."""

    def __init__(self, root: Path) -> None:
        self.package = f"demo_db_{uuid.uuid4().hex[:8]}"
        pkg = root / self.package
        (pkg / "migrations" / "versions").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "models_v1.py").write_text(MODELS_V1)
        (pkg / "models_v2.py").write_text(MODELS_V2)
        (pkg / "migrations" / "__init__.py").write_text("")
        (pkg / "migrations" / "env.py").write_text(
            f'from db_kit.migrations.env import run_env\n\nrun_env("{self.package}:CONFIG")\n'
        )
        shutil.copy(core_db.CONFIG.migrations_dir / "script.py.mako", pkg / "migrations")
        self.versions = pkg / "migrations" / "versions"

    def config(self, models: str) -> DatabaseConfig:
        return DatabaseConfig(
            name="demo",
            settings_class=DemoSettings,
            models=f"{self.package}.{models}",
            migrations=f"{self.package}.migrations",
        )

    def revisions(self) -> list[Path]:
        return sorted(self.versions.glob("*.py"))


@pytest.fixture
def demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_database: Callable[..., URL]
) -> tuple[DemoLib, URL]:
    monkeypatch.syspath_prepend(str(tmp_path))
    url = fresh_database("demo")
    monkeypatch.setenv("DEMO_DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.setenv("ENVIRONMENT", "development")
    return DemoLib(tmp_path), url


def run(app: typer.Typer, *args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), input=input)
    output = result.output + (getattr(result, "stderr", "") if result.stderr_bytes else "")
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, output


def tables(url: URL) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def columns(url: URL, table: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {c["name"] for c in inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def version(url: URL) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
            return row[0] if row else None
    finally:
        engine.dispose()


def test_generate_migrate_drift_deploy(demo: tuple[DemoLib, URL]) -> None:
    lib, url = demo
    v1 = database_app(lib.config("models_v1"))

    code, out = run(v1, "generate", "-m", "create items")
    assert code == 0, out
    assert "Wrote revision" in out
    assert len(lib.revisions()) == 1
    first = lib.revisions()[0].name.split("_")[2]

    # The first revision is not applied to the database yet: generate compares the models
    # with what the migration files build (a shadow database), so there is nothing to write.
    code, out = run(v1, "generate", "-m", "again")
    assert code == 0, out
    assert "no revision written" in out
    assert len(lib.revisions()) == 1

    code, out = run(v1, "status")
    assert code == 3
    assert "pending: 1 revision(s)" in out
    assert "create items" in out

    code, out = run(v1, "migrate")
    assert code == 0, out
    assert "upgraded" in out
    assert version(url) == first
    assert "items" in tables(url)

    code, out = run(v1, "generate", "-m", "nothing changed")
    assert code == 0
    assert "no revision written" in out
    assert len(lib.revisions()) == 1

    code, out = run(v1, "status")
    assert code == 0, out
    assert "pending: none" in out
    assert "drift:   none" in out

    # A model change without a revision: status shows drift and deploy refuses.
    v2 = database_app(lib.config("models_v2"))
    code, out = run(v2, "status")
    assert code == 3
    assert "price_minor" in out
    code, out = run(v2, "deploy")
    assert code == 1
    assert "disagree" in out
    assert "price_minor" in out
    assert "price_minor" not in columns(url, "items")

    code, out = run(v2, "generate", "-m", "add price")
    assert code == 0, out
    assert len(lib.revisions()) == 2
    assert "price_minor" in lib.revisions()[-1].read_text() or any(
        "price_minor" in p.read_text() for p in lib.revisions()
    )
    code, out = run(v2, "status")
    assert code == 3
    assert "add price" in out

    code, out = run(v2, "deploy")
    assert code == 0, out
    assert "deployed" in out
    assert "price_minor" in columns(url, "items")

    code, out = run(v2, "deploy")
    assert code == 0
    assert "nothing to do" in out

    code, out = run(v2, "history")
    assert code == 0
    assert "add price" in out
    assert "create items" in out


def test_downgrade_reset_push_in_development(demo: tuple[DemoLib, URL]) -> None:
    lib, url = demo
    v1 = database_app(lib.config("models_v1"))
    assert run(v1, "generate", "-m", "create items")[0] == 0
    assert run(v1, "migrate")[0] == 0

    code, out = run(v1, "downgrade", "base", input="n\n")
    assert code == 1
    assert "aborted" in out
    assert "items" in tables(url)

    code, out = run(v1, "downgrade", "base", "--yes")
    assert code == 0, out
    assert "items" not in tables(url)
    assert version(url) is None

    assert run(v1, "migrate")[0] == 0
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO items (name) VALUES ('x')"))
    engine.dispose()
    code, out = run(v1, "reset", "--yes")
    assert code == 0, out
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM items")).scalar() == 0
    engine.dispose()

    v2 = database_app(lib.config("models_v2"))
    code, out = run(v2, "push")
    assert code == 0, out
    assert "AddColumnOp" in out
    assert "price_minor" in columns(url, "items")
    code, out = run(v2, "push")
    assert "already matches" in out


@pytest.mark.parametrize("command", [["reset", "--yes"], ["push"], ["downgrade", "base", "--yes"]])
def test_production_refuses_destructive_commands(
    demo: tuple[DemoLib, URL], monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    lib, url = demo
    v1 = database_app(lib.config("models_v1"))
    assert run(v1, "generate", "-m", "create items")[0] == 0
    assert run(v1, "migrate")[0] == 0
    head = version(url)

    monkeypatch.setenv("ENVIRONMENT", "production")
    prod = database_app(lib.config("models_v2"))
    code, out = run(prod, *command)
    assert code == 1
    assert "Refusing" in out
    assert "production" in out
    assert version(url) == head
    assert "items" in tables(url)
    assert "price_minor" not in columns(url, "items")


def test_failing_revision_rolls_back_and_keeps_version(demo: tuple[DemoLib, URL]) -> None:
    lib, url = demo
    v1 = database_app(lib.config("models_v1"))
    assert run(v1, "generate", "-m", "create items")[0] == 0
    assert run(v1, "migrate")[0] == 0
    head = version(url)

    code, out = run(v1, "create", "-m", "broken")
    assert code == 0, out
    broken = next(p for p in lib.revisions() if "broken" in p.name)
    source = broken.read_text().replace(
        "def upgrade() -> None:\n    pass",
        textwrap.dedent(
            """\
            def upgrade() -> None:
                op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
                op.execute("INSERT INTO items (name) VALUES ('from broken revision')")
                op.execute("SELECT 1 / 0")"""
        ),
    )
    broken.write_text(source)

    code, out = run(v1, "migrate")
    assert code == 1
    flat = " ".join(out.split())
    assert "division by zero" in flat
    rev = broken.name.split("_")[2]
    assert f"revision {rev} ('broken') failed" in flat  # the one-line error names it
    assert f"stays at {head}" in flat
    assert version(url) == head
    assert "half_done" not in tables(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM items")).scalar() == 0
    engine.dispose()


def test_concurrent_deploys_serialize(fresh_database: Callable[..., URL]) -> None:
    """Two `db core deploy` processes: one applies, the other waits and finds nothing to do."""
    url = fresh_database("deploy")
    env = {
        **__import__("os").environ,
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "ENVIRONMENT": "production",
    }
    engine = create_engine(url)
    holder = engine.connect()
    key = lock_key(core_db.CONFIG.version_table)
    holder.execute(text("SELECT pg_advisory_lock(:c, :k)"), {"c": LOCK_CLASS, "k": key})
    holder.commit()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "db_tools", "core", "deploy"],
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
        while time.monotonic() < deadline:
            waiting = holder.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND NOT granted AND classid = :c AND objid = :k"
                ),
                {"c": LOCK_CLASS, "k": key},
            ).scalar_one()
            holder.commit()
            if waiting == 2:
                break
            time.sleep(0.1)
        assert waiting == 2, "both deploys should be waiting on the migration lock"
        assert version(url) is None
    finally:
        holder.execute(text("SELECT pg_advisory_unlock(:c, :k)"), {"c": LOCK_CLASS, "k": key})
        holder.commit()
        holder.close()
        engine.dispose()
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sorted("deployed" in o for o in outputs) == [False, True], outputs
    assert sum("nothing to do" in o for o in outputs) == 1, outputs
    assert "core_db" not in "".join(outputs)  # no traceback
    assert version(url) is not None


# The shadow database: generate, deploy and status never trust a pushed database ----------


def test_push_then_generate_writes_the_column_and_status_says_how_to_get_out(
    demo: tuple[DemoLib, URL],
) -> None:
    lib, url = demo
    v1 = database_app(lib.config("models_v1"))
    assert run(v1, "generate", "-m", "create items")[0] == 0
    assert run(v1, "migrate")[0] == 0

    v2 = database_app(lib.config("models_v2"))
    code, out = run(v2, "push")
    assert code == 0, out
    assert "price_minor" in columns(url, "items")

    # The database matches the models, but no migration file has the column.
    code, out = run(v2, "status")
    assert code == 3, out
    assert "drift:   none" not in out
    assert "change(s) no migration has" in out
    assert "differs from what its migrations build" in out
    assert "price_minor" in out
    assert "reset" in out
    assert "generate" in out

    code, out = run(v2, "deploy")
    assert code == 1, out
    assert "disagree" in out
    assert "price_minor" in out

    code, out = run(v2, "generate", "-m", "add price")
    assert code == 0, out
    assert "Wrote revision" in out
    assert len(lib.revisions()) == 2
    assert any("add_column" in p.read_text() and "price_minor" in p.read_text()
               for p in lib.revisions())  # fmt: skip

    # The way out the status named: rebuild the database from the migrations.
    code, out = run(v2, "reset", "--yes")
    assert code == 0, out
    code, out = run(v2, "status")
    assert code == 0, out
    assert "drift:   none" in out
    assert "price_minor" in columns(url, "items")


def test_status_names_a_database_changed_by_hand(demo: tuple[DemoLib, URL]) -> None:
    lib, url = demo
    v1 = database_app(lib.config("models_v1"))
    assert run(v1, "generate", "-m", "create items")[0] == 0
    assert run(v1, "migrate")[0] == 0
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE items ADD COLUMN by_hand integer"))
    engine.dispose()
    code, out = run(v1, "status")
    assert code == 3, out
    assert "differs from what its migrations build" in out
    assert "by_hand" in out
    assert "change(s) no migration has" not in out  # the models and migrations agree


def test_shadow_needs_createdb_or_a_shadow_url(
    demo: tuple[DemoLib, URL],
    fresh_database: Callable[..., URL],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lib, url = demo
    v1 = database_app(lib.config("models_v1"))
    assert run(v1, "generate", "-m", "create items")[0] == 0
    role = f"nocreatedb_{uuid.uuid4().hex[:6]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'"))
        conn.execute(text(f'GRANT ALL ON DATABASE "{url.database}" TO {role}'))
        conn.execute(text(f"GRANT ALL ON SCHEMA public TO {role}"))
    try:
        limited = url.set(username=role, password=f"pw-{role}")
        monkeypatch.setenv("DEMO_DATABASE_URL", limited.render_as_string(hide_password=False))
        code, out = run(database_app(lib.config("models_v1")), "deploy")
        assert code == 1, out
        assert "CREATEDB" in out
        assert "DEMO_DB_SHADOW_DATABASE_URL" in out
        assert f"pw-{role}" not in out

        shadow = fresh_database("shadow")
        with admin.begin() as conn:
            conn.execute(text(f'ALTER DATABASE "{shadow.database}" OWNER TO {role}'))
        monkeypatch.setenv(
            "DEMO_DB_SHADOW_DATABASE_URL",
            shadow.set(username=role, password=f"pw-{role}").render_as_string(hide_password=False),
        )
        code, out = run(database_app(lib.config("models_v1")), "deploy")
        assert code == 0, out
        assert "deployed" in out
        assert "items" in tables(url)
        assert tables(shadow) == set()  # emptied again after use
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {role} CASCADE"))
        for database in (url,):
            engine = create_engine(database)
            with engine.begin() as conn:
                conn.execute(text(f"DROP OWNED BY {role} CASCADE"))
            engine.dispose()
        admin.dispose()


# Lock timeouts: DDL never waits forever behind a long transaction ----------------------

ALTER_ITEMS = textwrap.dedent(
    """\
    def upgrade() -> None:
        op.add_column("items", sa.Column("note", sa.Text(), nullable=True))"""
)


def _hand_revision(lib: DemoLib, app: typer.Typer, message: str, body: str) -> Path:
    code, out = run(app, "create", "-m", message)
    assert code == 0, out
    path = next(p for p in lib.revisions() if message.replace(" ", "_") in p.name)
    path.write_text(path.read_text().replace("def upgrade() -> None:\n    pass", body))
    return path


def test_ddl_behind_an_open_transaction_times_out_naming_the_blocker(
    demo: tuple[DemoLib, URL], monkeypatch: pytest.MonkeyPatch
) -> None:
    lib, url = demo
    monkeypatch.setenv("DEMO_DB_MIGRATION_LOCK_TIMEOUT_MS", "300")
    monkeypatch.setenv("DEMO_DB_MIGRATION_LOCK_RETRIES", "2")
    v1 = database_app(lib.config("models_v1"))
    assert run(v1, "generate", "-m", "create items")[0] == 0
    assert run(v1, "migrate")[0] == 0
    head = version(url)
    path = _hand_revision(lib, v1, "add note", ALTER_ITEMS)
    rev = path.name.split("_")[2]

    engine = create_engine(url, pool_size=3)
    blocker = engine.connect()
    blocker_pid = blocker.execute(text("SELECT pg_backend_pid()")).scalar_one()
    # Idle in transaction; its literal stands for a value that must not reach the output.
    blocker.execute(
        text("SELECT count(*) AS blocking_reader FROM items WHERE name <> 'hunter2-secret'")
    )

    # The app keeps serving: a reader never waits longer than about one lock timeout.
    import threading

    waits: list[float] = []
    stop = threading.Event()

    def reader() -> None:
        with engine.connect() as conn:
            conn.execute(text("SET statement_timeout = '5s'"))
            while not stop.is_set():
                started = time.perf_counter()
                conn.execute(text("SELECT count(*) FROM items"))
                conn.rollback()
                waits.append(time.perf_counter() - started)
                time.sleep(0.02)

    thread = threading.Thread(target=reader)
    thread.start()
    started = time.perf_counter()
    try:
        code, out = run(database_app(lib.config("models_v1")), "migrate")
    finally:
        elapsed = time.perf_counter() - started
        stop.set()
        thread.join()
    assert code == 1, out
    assert elapsed < 8, elapsed  # 3 attempts of 0.3 s and pauses of 0.5 s and 1 s
    flat = " ".join(out.split())
    assert f"revision {rev}" in flat
    assert "add note" in flat
    assert "could not take a lock within 300 ms (3 attempt(s))" in flat
    assert f"pid {blocker_pid}" in flat
    assert "blocking_reader" in flat
    assert "hunter2-secret" not in flat  # the blocker's query is shown without its literals
    assert "DEMO_DB_MIGRATION_LOCK_TIMEOUT_MS" in flat
    assert version(url) == head
    assert "note" not in columns(url, "items")
    assert waits
    assert max(waits) < 1.5, max(waits)

    # Once the blocker is gone during the retries, the migration goes through.
    monkeypatch.setenv("DEMO_DB_MIGRATION_LOCK_RETRIES", "5")
    threading.Timer(0.6, blocker.rollback).start()
    code, out = run(database_app(lib.config("models_v1")), "migrate")
    assert code == 0, out
    assert version(url) == rev
    assert "note" in columns(url, "items")
    blocker.close()
    engine.dispose()


def test_offline_sql_sets_the_migration_timeouts(
    demo: tuple[DemoLib, URL], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from alembic import command

    from db_kit.migrations.migrator import Migrator

    lib, _ = demo
    monkeypatch.setenv("DEMO_DB_MIGRATION_LOCK_TIMEOUT_MS", "1234")
    config = lib.config("models_v1")
    assert run(database_app(config), "generate", "-m", "create items")[0] == 0
    buffer = io.StringIO()
    cfg = Migrator(config).alembic_config()
    cfg.output_buffer = buffer
    command.upgrade(cfg, "head", sql=True)
    script = buffer.getvalue()
    assert "SET lock_timeout = '1234ms'" in script
    assert "SET statement_timeout = '900000ms'" in script
    assert script.index("SET lock_timeout") < script.index("CREATE TABLE items")


def test_downgrade_minus_one_is_a_revision_not_an_option(demo: tuple[DemoLib, URL]) -> None:
    lib, url = demo
    v1 = database_app(lib.config("models_v1"))
    assert run(v1, "generate", "-m", "create items")[0] == 0
    assert run(v1, "migrate")[0] == 0
    first = version(url)
    _hand_revision(lib, v1, "add note", ALTER_ITEMS)
    assert run(v1, "migrate")[0] == 0
    version_after_migrate = version(url)
    assert version_after_migrate != first

    code, out = run(v1, "downgrade", "-1", "--yes")
    assert code == 0, out
    assert "downgraded" in out
    assert version(url) == first
    code, out = run(v1, "downgrade", "--bogus", "--yes")
    assert code != 0


def test_unset_environment_refuses_destructive_commands_and_says_why(
    demo: tuple[DemoLib, URL], monkeypatch: pytest.MonkeyPatch
) -> None:
    lib, url = demo
    v1 = database_app(lib.config("models_v1"))
    assert run(v1, "generate", "-m", "create items")[0] == 0
    assert run(v1, "migrate")[0] == 0
    monkeypatch.delenv("ENVIRONMENT")
    monkeypatch.delenv("APP_ENV", raising=False)
    code, out = run(database_app(lib.config("models_v1")), "reset", "--yes")
    assert code == 1
    flat = " ".join(out.split())
    assert "ENVIRONMENT is unset (which means production)" in flat
    assert "ENVIRONMENT=development" in flat
    assert "items" in tables(url)
