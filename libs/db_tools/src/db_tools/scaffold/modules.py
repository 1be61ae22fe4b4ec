"""The shared feature modules a new database can compose, read from the workspace sources.

They are found by reading the workspace, not by importing them (the tools sit beside the
features, not above them): a module is any member whose package has a ``tables.py`` of
``TableMixin`` subclasses, and its ``seed.py`` helper is called with the models its
``type[...Table]`` parameters name.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

from db_tools.scaffold.errors import ScaffoldError

__all__ = ["SeedHelper", "SharedModule", "SharedTable", "choose_modules", "shared_modules"]


@dataclass(frozen=True)
class SharedTable:
    mixin: str  # AuthUserTable
    table: str  # auth_users

    @property
    def model(self) -> str:
        """The class a db lib composes from the mixin: ``AuthUserTable`` -> ``AuthUser``."""
        return self.mixin.removesuffix("Table")


@dataclass(frozen=True)
class SeedHelper:
    function: str  # seed_auth
    models: tuple[str, ...]  # the models it takes after the session, in order
    returns_note: bool  # returns a line for the operator (str | None)


@dataclass(frozen=True)
class SharedModule:
    package: str  # import name, e.g. auth
    distribution: str  # pyproject name, e.g. auth
    tables: tuple[SharedTable, ...]
    references: frozenset[str]  # tables its foreign keys point at
    seed: SeedHelper | None

    @property
    def table_names(self) -> frozenset[str]:
        return frozenset(t.table for t in self.tables)


def _call_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _read_tables(source: str) -> tuple[tuple[SharedTable, ...], frozenset[str]]:
    tables: list[SharedTable] = []
    references: set[str] = set()
    tree = ast.parse(source)
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        if "TableMixin" not in {_call_name(b) for b in node.bases}:
            continue
        for stmt in node.body:
            if (
                isinstance(stmt, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__tablename__" for t in stmt.targets)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            ):
                tables.append(SharedTable(node.name, stmt.value.value))
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and _call_name(call.func) == "ForeignKey" and call.args:
            target = call.args[0]
            if isinstance(target, ast.Constant) and isinstance(target.value, str):
                parts = target.value.split(".")
                if len(parts) >= 2:
                    references.add(parts[-2])
    return tuple(tables), frozenset(references)


def _read_seed(source: str, package: str) -> SeedHelper | None:
    for node in ast.parse(source).body:
        if not isinstance(node, ast.FunctionDef) or node.name != f"seed_{package}":
            continue
        models: list[str] = []
        for arg in node.args.args[1:]:
            ann = arg.annotation
            # type[AuthUserTable] -> AuthUser
            if (
                isinstance(ann, ast.Subscript)
                and _call_name(ann.value) == "type"
                and isinstance(ann.slice, ast.Name)
            ):
                models.append(ann.slice.id.removesuffix("Table"))
            else:
                return None  # a helper we do not know how to call
        returns_note = not (isinstance(node.returns, ast.Constant) and node.returns.value is None)
        return SeedHelper(node.name, tuple(models), returns_note)
    return None


def shared_modules(root: Path) -> dict[str, SharedModule]:
    """Every shared feature module of the workspace at ``root``, by import name."""
    found: dict[str, SharedModule] = {}
    for tables_file in sorted(root.glob("libs/*/src/*/tables.py")):
        package_dir = tables_file.parent
        member = package_dir.parent.parent
        tables, references = _read_tables(tables_file.read_text(encoding="utf-8"))
        if not tables:
            continue  # db_shared.tables defines the mixin itself
        package = package_dir.name
        try:
            distribution = tomllib.loads((member / "pyproject.toml").read_text("utf-8"))["project"][
                "name"
            ]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            continue
        seed_file = package_dir / "seed.py"
        seed = (
            _read_seed(seed_file.read_text(encoding="utf-8"), package)
            if seed_file.exists()
            else None
        )
        found[package] = SharedModule(package, str(distribution), tables, references, seed)
    return found


def choose_modules(spec: str | None, known: dict[str, SharedModule]) -> tuple[SharedModule, ...]:
    """The modules ``--modules`` names (default: all); refuses unknown or incomplete choices."""
    valid = ", ".join(sorted(known)) or "(none found)"
    if spec is None:
        names = sorted(known)
    elif spec.strip().lower() in {"", "none"}:
        names = []
    else:
        names = []
        for raw in spec.split(","):
            item = raw.strip()
            if not item:
                continue
            if item not in known:
                raise ScaffoldError(
                    f"Unknown shared module '{item}' in --modules. Valid modules: {valid} "
                    "(comma-separated, or 'none')."
                )
            if item not in names:
                names.append(item)
    chosen = [known[n] for n in names]
    defined = frozenset().union(*(m.table_names for m in chosen))
    for module in chosen:
        missing = sorted(module.references - module.table_names - defined)
        if not missing:
            continue
        needs = sorted(
            {m.package for m in known.values() if m.table_names & set(missing)} - set(names)
        )
        fix = ",".join([*names, *needs])
        raise ScaffoldError(
            f"Module '{module.package}' references table(s) {', '.join(missing)}, defined by "
            f"{', '.join(needs) or 'no known module'}. Add it: --modules {fix}"
        )
    return tuple(chosen)
