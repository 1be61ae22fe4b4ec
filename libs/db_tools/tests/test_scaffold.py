"""`db new NAME`: what it renders, what it refuses, and the whole flow in a copy of the repo.

The end-to-end test copies the working tree to a temporary folder (never the repository
itself), runs `db new demo` there, adds a model, and generates and migrates it on a fresh
database of the run's server, as a user would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import URL
from typer.testing import CliRunner

from db_tools import scaffold
from db_tools.cli import build_app
from db_tools.testing import run_sql, url_string

ROOT = Path(__file__).resolve().parents[3]
SHARED = ("auth", "contact", "notifications", "payments")
TIMEOUT = 300


def _shared() -> dict[str, scaffold.SharedModule]:
    return scaffold.shared_modules(ROOT)


# Rendering ---------------------------------------------------------------------------------


def test_shared_modules_are_read_from_the_workspace() -> None:
    known = _shared()
    assert sorted(known) == list(SHARED)
    auth = known["auth"]
    assert [t.model for t in auth.tables][:2] == ["AuthUser", "UserProfile"]
    assert auth.seed == scaffold.SeedHelper("seed_auth", ("AuthUser", "Role", "UserRole"), True)
    assert "auth_users" in known["payments"].references


@pytest.mark.parametrize("feature", SHARED)
def test_feature_models_compose_the_mixins_exactly_as_bibikos_db_does(feature: str) -> None:
    plan = scaffold.Scaffold("bibikos", ROOT, scaffold.choose_modules(None, _shared()))
    module = _shared()[feature]
    expected = ROOT / "libs/bibikos_db/src/bibikos_db/models" / f"{feature}.py"
    assert plan.feature_models(module) == expected.read_text()


def test_the_migration_script_template_is_the_one_every_db_lib_uses() -> None:
    template = (scaffold.TEMPLATES / "script.py.mako").read_text()
    for lib in ("core_db", "bibikos_db"):
        assert (ROOT / f"libs/{lib}/src/{lib}/migrations/script.py.mako").read_text() == template


def test_seed_calls_the_shared_seed_helpers_as_core_db_does() -> None:
    plan = scaffold.Scaffold("core", ROOT, scaffold.choose_modules(None, _shared()))
    rendered = plan.seed().partition('"""\n')[2].split('"""', 1)[-1]
    expected = (ROOT / "libs/core_db/src/core_db/seed.py").read_text()
    assert rendered == expected.partition('"""\n')[2].split('"""', 1)[-1]


def test_a_database_without_shared_modules_still_renders_a_seed() -> None:
    plan = scaffold.Scaffold("bare", ROOT, scaffold.choose_modules("none", _shared()))
    files = plan.files()
    assert "return None" in files["src/bare_db/seed.py"]
    assert not any(path.startswith("src/bare_db/models/auth") for path in files)
    assert tomllib.loads(files["pyproject.toml"])["project"]["entry-points"][
        "db_kit.databases"
    ] == {"bare": "bare_db.config:CONFIG"}


@pytest.mark.parametrize("modules", ["none", "auth", "auth,payments", "contact,auth", None])
def test_every_module_choice_renders_lint_clean_code(tmp_path: Path, modules: str | None) -> None:
    # Rendered as `core` so the root's known-first-party applies (core_db is listed there).
    plan = scaffold.Scaffold("core", ROOT, scaffold.choose_modules(modules, _shared()))
    for relative, content in plan.files().items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(content)
    config = str(ROOT / "pyproject.toml")
    for args in (["check", "--no-cache"], ["format", "--check", "--no-cache"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "--config", config, str(tmp_path)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr


def test_register_in_workspace_adds_the_library_where_the_others_are_listed() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    plan = scaffold.Scaffold("demo", ROOT, ())
    edited = scaffold.register_in_workspace(text, plan)
    old, new = text.splitlines(), edited.splitlines()
    added = [line for line in new if line not in old]
    removed = [line for line in old if line not in new]
    # Two new lines (dependencies, uv sources); three arrays get the item on their last line.
    assert added[:2] == ['    "demo-db",', "demo-db = { workspace = true }"]
    assert added[2].endswith(', "demo_db",')
    assert added[3].endswith(', "libs/demo_db/src",')
    assert added[4].endswith(', "contact.*", "demo_db.*"]')
    assert len(added) == 5
    assert len(removed) == 3
    assert len(new) == len(old) + 2
    # Comments and blank lines survive.
    assert [line for line in new if line.startswith("#") or not line] == [
        line for line in old if line.startswith("#") or not line
    ]
    # It parses to exactly the intended config.
    expected = tomllib.loads(text)
    expected["project"]["dependencies"].append("demo-db")
    expected["tool"]["uv"]["sources"]["demo-db"] = {"workspace": True}
    expected["tool"]["ruff"]["lint"]["isort"]["known-first-party"].append("demo_db")
    expected["tool"]["mypy"]["mypy_path"].append("libs/demo_db/src")
    next(o for o in expected["tool"]["mypy"]["overrides"] if o.get("strict"))["module"].append(
        "demo_db.*"
    )
    assert tomllib.loads(edited) == expected
    # A second registration of the same library changes nothing.
    assert scaffold.register_in_workspace(edited, plan) == edited


def test_register_in_workspace_adds_a_missing_sources_table() -> None:
    plan = scaffold.Scaffold("demo", ROOT, ())
    text = '[project]\nname = "x"\ndependencies = []  # kept\n\n[tool.uv.workspace]\nmembers = ["libs/*"]\n'
    edited = scaffold.register_in_workspace(text, plan)
    assert 'dependencies = ["demo-db"]  # kept' in edited
    assert tomllib.loads(edited)["tool"]["uv"]["sources"] == {"demo-db": {"workspace": True}}


def test_register_in_workspace_refuses_a_pyproject_it_cannot_edit() -> None:
    plan = scaffold.Scaffold("demo", ROOT, ())
    text = '[project]\nname = "x"\n\n[tool.uv.workspace]\nmembers = ["libs/*"]\n'
    with pytest.raises(scaffold.ScaffoldError, match=r"Could not add demo-db to pyproject\.toml"):
        scaffold.register_in_workspace(text, plan)
    with pytest.raises(scaffold.ScaffoldError, match="do not cover libs/demo_db"):
        scaffold.register_in_workspace(text.replace("libs/*", "apps/*"), plan)


# Refusals, before anything is written ------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace root with the shared modules but no db libs (`db` still knows core)."""
    root = tmp_path / "ws"
    (root / "libs").mkdir(parents=True)
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, root / name)
    for lib in ("db_shared", *SHARED):
        shutil.copytree(ROOT / "libs" / lib, root / "libs" / lib, ignore=_ignored)
    monkeypatch.setenv("DB_WORKSPACE_ROOT", str(root))
    return root


def _ignored(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n in {"__pycache__", ".pytest_cache"}}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["2x"], "'2x' is not a lower_snake_case identifier"),
        (["my-db"], "Try 'my_db'"),
        (["Demo"], "Try 'demo'"),
        (["a b"], "Try 'a_b'"),
        (["demo_"], "not a lower_snake_case identifier"),
        (["class"], "'class' is a Python keyword"),
        ([""], "The database name is empty"),
        (["a" * 31], "at most 30 are allowed"),
        (["shop_db"], "Leave out the _db suffix: `db new shop`"),
        (["new"], "'new' is a command of `db` itself"),
        (["list"], "'list' is a command of `db` itself"),
        (["core"], "A database named 'core' is already installed"),
        (["bibikos"], "A database named 'bibikos' is already installed"),
        (["json"], "'json' is already a module of the standard library"),
        (["test"], "'test' is already a module"),
        (["sqlalchemy"], "'sqlalchemy' is already a module of an installed package"),
        (["auth"], "'auth' is already a module of a workspace member"),
        (
            ["demo", "--modules", "gym"],
            "Unknown shared module 'gym' in --modules. Valid modules: auth, contact, notifications, payments",
        ),
        (["demo", "--modules", "payments"], "--modules payments,auth"),
    ],
)
def test_bad_requests_are_refused_before_writing_anything(
    workspace: Path, args: list[str], message: str
) -> None:
    before = _snapshot(workspace)
    result = CliRunner().invoke(build_app(), ["new", *args])
    output = result.output + (result.stderr if result.stderr_bytes else "")
    assert result.exit_code == 1, output
    assert message in " ".join(output.split()), output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) <= 3  # one wrapped line, no traceback
    assert _snapshot(workspace) == before


def test_an_existing_library_folder_is_refused(workspace: Path) -> None:
    (workspace / "libs" / "shop_db").mkdir()
    before = _snapshot(workspace)
    result = CliRunner().invoke(build_app(), ["new", "shop"])
    assert result.exit_code == 1
    assert "libs/shop_db already exists" in result.output + result.stderr
    assert _snapshot(workspace) == before


def test_an_unreachable_server_keeps_the_library_and_names_the_next_step(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFLINE_DATABASE_URL", "postgresql://app:s3cret@127.0.0.1:1/offline")
    monkeypatch.setattr(sys, "path", list(sys.path))  # the scaffold imports from libs/
    try:
        result = CliRunner().invoke(build_app(), ["new", "offline", "--no-sync"])
    finally:
        for module in [m for m in sys.modules if m.partition(".")[0] == "offline_db"]:
            del sys.modules[module]
    output = " ".join((result.output + result.stderr).split())
    assert result.exit_code == 1, output
    assert "Cannot reach PostgreSQL" in output
    assert "libs/offline_db was created without its initial revision" in output
    assert 'db offline generate -m "initial schema"' in output
    assert "s3cret" not in output
    assert "Traceback" not in output
    lib = workspace / "libs" / "offline_db"
    assert (lib / "src/offline_db/config.py").exists()
    assert not list((lib / "src/offline_db/migrations/versions").glob("*.py"))
    assert '"offline-db"' in (workspace / "pyproject.toml").read_text()


def test_a_workspace_that_is_not_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_WORKSPACE_ROOT", str(tmp_path))
    result = CliRunner().invoke(build_app(), ["new", "demo"])
    assert result.exit_code == 1
    assert "is not the workspace root" in result.output + result.stderr
    assert list(tmp_path.iterdir()) == []


# The whole flow in a copy of the repository ----------------------------------------------


def _uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv")
    if found is None:
        pytest.skip("uv is not installed")
    return found


def _copy_repo(target: Path) -> None:
    """The working tree (tracked and untracked, not ignored) without .venv or .data."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True, timeout=60,
    ).stdout.decode().split("\0")  # fmt: skip
    for relative in filter(None, listed):
        source = ROOT / relative
        if source.is_file():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)


WIDGET = '''"""A demo-only table: the database's own models generate and migrate like shared ones."""

from __future__ import annotations

from sqlalchemy import BigInteger, Identity, String
from sqlalchemy.orm import Mapped, mapped_column

from demo_db.models.base import Base


class Widget(Base):
    __tablename__ = "widgets"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
'''


@pytest.mark.slow
def test_db_new_demo_then_generate_and_migrate_in_a_copy_of_the_repo(
    tmp_path: Path, fresh_database: Callable[..., URL]
) -> None:
    uv = _uv()
    repo = tmp_path / "repo"
    _copy_repo(repo)
    url = fresh_database("demo")
    env = {
        k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"}
    }
    env |= {"UV_PYTHON_DOWNLOADS": "never", "DEMO_DATABASE_URL": url_string(url)}
    env.pop("DB_WORKSPACE_ROOT", None)

    def run(*cmd: str, expect: int = 0) -> str:
        done = subprocess.run(
            list(cmd), cwd=repo, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
        out = done.stdout + done.stderr
        assert done.returncode == expect, f"{' '.join(cmd)} -> {done.returncode}\n{out}"
        return out

    run(uv, "sync", "--frozen", "--all-packages", "--quiet")
    pyproject_before = (repo / "pyproject.toml").read_text()

    out = run(uv, "run", "--frozen", "db", "new", "demo")
    assert "Created libs/demo_db (shared modules: auth, contact, notifications, payments)" in out
    assert "`db demo ...` is ready" in out
    lib = repo / "libs" / "demo_db"
    versions = lib / "src/demo_db/migrations/versions"
    [initial] = versions.glob("*_initial_schema.py")
    assert 'op.create_table(\n        "auth_users"' in initial.read_text()
    assert "demo-db" in (repo / "uv.lock").read_text()
    assert (repo / "pyproject.toml").read_text() != pyproject_before
    # The scratch database used for autogenerate is gone; the target was never touched.
    assert run_sql(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
    leftovers = run_sql(
        url, "SELECT datname FROM pg_database WHERE datname LIKE 'demo%\\_shadow\\_%'"
    )
    assert leftovers == []

    # The db CLI and the Makefile know it with no edit.
    assert "demo\tDEMO_DATABASE_URL" in run(uv, "run", "--frozen", "db", "list")
    assert "upgraded (empty database) ->" in run(uv, "run", "--frozen", "db", "demo", "migrate")
    out = run(uv, "run", "--frozen", "db", "demo", "generate", "-m", "nothing")
    assert "No changes between the demo models and the schema its migrations build" in out

    # A model of its own: generate, migrate, use.
    (lib / "src/demo_db/models/widget.py").write_text(WIDGET)
    init = lib / "src/demo_db/models/__init__.py"
    text = init.read_text()
    payments = next(line for line in text.splitlines() if "models.payments import" in line)
    text = text.replace(payments, f"{payments}\nfrom demo_db.models.widget import Widget")
    init.write_text(text.replace('    "metadata",', '    "Widget",\n    "metadata",'))
    out = run(uv, "run", "--frozen", "db", "demo", "generate", "-m", "add widget")
    assert "Wrote revision" in out
    [added] = versions.glob("*_add_widget.py")
    assert '"widgets"' in added.read_text()
    assert "upgraded" in run(uv, "run", "--frozen", "db", "demo", "migrate")
    run_sql(url, "INSERT INTO widgets (name) VALUES ('sprocket')")
    assert run_sql(url, "SELECT name FROM widgets") == [("sprocket",)]
    assert ("auth_users",) in run_sql(
        url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    )

    status = run("make", "db-demo-status")
    assert "pending: none" in status
    assert "drift:   none" in status

    # The generated library passes the project's own checks.
    run(uv, "run", "--frozen", "ruff", "check", "libs/demo_db")
    run(uv, "run", "--frozen", "ruff", "format", "--check", "libs/demo_db")
    run(uv, "run", "--frozen", "mypy", "libs/demo_db/src")

    # Asking again is refused and changes nothing.
    before = _snapshot(lib), (repo / "pyproject.toml").read_text()
    out = run(uv, "run", "--frozen", "db", "new", "demo", expect=1)
    assert "libs/demo_db already exists" in out
    assert (_snapshot(lib), (repo / "pyproject.toml").read_text()) == before
