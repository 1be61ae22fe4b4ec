"""``db new NAME``: scaffold ``libs/NAME_db``, register it in the workspace, write its first revision.

Replaces the copy-and-rename steps of adding a database by hand. Everything that can be
wrong with the request (the name, the modules, the root ``pyproject.toml``) is checked
before the first file is written; the library is rendered in a temporary folder and moved
into place in one rename, so a failure never leaves half a library behind.

The shared feature modules are found by reading the workspace, not by importing them
(db_kit sits below the features in the dependency graph): a module is any member whose
package has a ``tables.py`` of ``TableMixin`` subclasses, and its ``seed.py`` helper is
called with the models its ``type[...Table]`` parameters name.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import fnmatch
import importlib
import importlib.metadata
import importlib.util
import keyword
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from db_shared.errors import ConfigurationError

TEMPLATES = Path(__file__).parent / "scaffold_templates"
MAX_NAME_LENGTH = 30
# Lower-case words joined by single underscores: it names a package, an env var and a CLI group.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
# Commands of `db` itself: a database group of that name would shadow them.
RESERVED_NAMES = frozenset({"new", "list"})
LINE_LENGTH = 100
INITIAL_MESSAGE = "initial schema"
UV_TIMEOUT_SECONDS = 600


class ScaffoldError(ConfigurationError):
    """The request cannot be scaffolded; the message names the problem and the fix."""


# Shared feature modules, read from the workspace sources -----------------------------------


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


# The name ---------------------------------------------------------------------------------


def _installed_database_names() -> set[str]:
    """Names of the databases registered in this environment (entry points, unloaded)."""
    from db_tools.discovery import ENTRY_POINT_GROUP

    names = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    with contextlib.suppress(Exception):
        from db_tools.discovery import discover

        names |= set(discover())
    return names


def _importable(module: str) -> bool:
    if module in sys.stdlib_module_names or module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _distribution_installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def check_name(name: str, root: Path) -> None:
    """Refuse a name that is not a lower_snake_case identifier, exists, or names a package."""
    usage = "Use lower_snake_case, e.g. `db new shop` creates libs/shop_db."
    if not name:
        raise ScaffoldError(f"The database name is empty. {usage}")
    if len(name) > MAX_NAME_LENGTH:
        raise ScaffoldError(
            f"The database name '{name}' has {len(name)} characters; at most "
            f"{MAX_NAME_LENGTH} are allowed (it prefixes env vars and package names)."
        )
    if not NAME_PATTERN.fullmatch(name):
        suggestion = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        hint = (
            f" Try '{suggestion}'."
            if suggestion and NAME_PATTERN.fullmatch(suggestion) and suggestion != name
            else ""
        )
        raise ScaffoldError(
            f"The database name '{name}' is not a lower_snake_case identifier (a lower-case "
            f"letter, then lower-case letters, digits and single underscores).{hint} {usage}"
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise ScaffoldError(f"The database name '{name}' is a Python keyword. {usage}")
    if name.endswith("_db"):
        raise ScaffoldError(
            f"Leave out the _db suffix: `db new {name.removesuffix('_db')}` creates libs/{name}."
        )
    if name in RESERVED_NAMES:
        raise ScaffoldError(
            f"'{name}' is a command of `db` itself (`db {name}`); choose another name."
        )
    package = f"{name}_db"
    lib_dir = root / "libs" / package
    if lib_dir.exists():
        raise ScaffoldError(
            f"libs/{package} already exists. Choose another name, or remove that folder first."
        )
    if name in _installed_database_names():
        raise ScaffoldError(
            f"A database named '{name}' is already installed (`db {name}`; see `db list`). "
            "Choose another name."
        )
    members = {p.parent.name for p in root.glob("*/*/src/*/__init__.py")}
    for candidate in (package, name):
        if candidate in members or _importable(candidate):
            where = (
                "the standard library"
                if candidate in sys.stdlib_module_names
                else "a workspace member"
                if candidate in members
                else "an installed package"
            )
            raise ScaffoldError(
                f"'{candidate}' is already a module of {where}; a database named '{name}' "
                f"would be confused with it (`import {candidate}`). Choose another name, "
                f"e.g. '{name}_store'."
            )
    for distribution in (f"{name}-db", name):
        if _distribution_installed(distribution):
            raise ScaffoldError(
                f"A package named '{distribution}' is already installed; choose another name "
                "(if you deleted its folder, `uv sync --all-packages` uninstalls it)."
            )


# Rendering -------------------------------------------------------------------------------


def _name_order(name: str) -> tuple[int, str]:
    """isort's order-by-type: CONSTANTS, then Classes, then everything else."""
    if name.isupper() and len(name) > 1:
        return (0, name)
    return (1, name) if name[:1].isupper() else (2, name)


def from_import(module: str, names: Iterable[str]) -> str:
    """One ``from module import ...`` statement laid out as ruff's isort and formatter do."""
    ordered = sorted(set(names), key=_name_order)
    line = f"from {module} import {', '.join(ordered)}"
    if len(line) <= LINE_LENGTH:
        return line
    inner = "".join(f"    {n},\n" for n in ordered)
    return f"from {module} import (\n{inner})"


def import_block(imports: Mapping[str, Iterable[str]]) -> str:
    """First-party ``from`` imports, sorted by module as ruff's isort wants them."""
    return "\n".join(from_import(m, imports[m]) for m in sorted(imports, key=str.lower))


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


@dataclass(frozen=True)
class Scaffold:
    """What ``db new NAME`` writes: a library mirroring bibikos_db's layout."""

    name: str
    root: Path
    modules: tuple[SharedModule, ...]

    @property
    def package(self) -> str:
        return f"{self.name}_db"

    @property
    def distribution(self) -> str:
        return f"{self.name.replace('_', '-')}-db"

    @property
    def lib_dir(self) -> Path:
        return self.root / "libs" / self.package

    @property
    def settings_class(self) -> str:
        return f"{_camel(self.name)}Settings"

    @property
    def url_variable(self) -> str:
        return f"{self.name.upper()}_DATABASE_URL"

    @property
    def env_prefix(self) -> str:
        return f"{self.name.upper()}_DB_"

    def _render(self, template: str, **values: str) -> str:
        text = (TEMPLATES / template).read_text(encoding="utf-8")
        return Template(text).substitute(
            name=self.name,
            package=self.package,
            distribution=self.distribution,
            settings_class=self.settings_class,
            url_variable=self.url_variable,
            env_prefix=self.env_prefix,
            **values,
        )

    def feature_models(self, module: SharedModule) -> str:
        """``models/<feature>.py``: one ``class X(XTable, Base)`` per shared table."""
        imports = import_block(
            {
                f"{module.package}.tables": [t.mixin for t in module.tables],
                f"{self.package}.models.base": ["Base"],
            }
        )
        classes = "\n\n\n".join(
            f"class {t.model}({t.mixin}, Base):\n    pass" for t in module.tables
        )
        return self._render(
            "feature_models.py.tmpl", feature=module.package, imports=imports, classes=classes
        )

    def models_init(self) -> str:
        imports: dict[str, list[str]] = {f"{self.package}.models.base": ["Base"]}
        exports = ["Base", "metadata"]
        for module in self.modules:
            models = [t.model for t in module.tables]
            imports[f"{self.package}.models.{module.package}"] = models
            exports.extend(models)
        lines = "".join(f'    "{e}",\n' for e in sorted(exports, key=_name_order)).rstrip("\n")
        return self._render("models_init.py.tmpl", imports=import_block(imports), exports=lines)

    def seed(self) -> str:
        first_party: dict[str, list[str]] = {}
        models: set[str] = set()
        calls: list[tuple[str, bool]] = []
        for module in self.modules:
            helper = module.seed
            if helper is None:
                continue
            first_party[f"{module.package}.seed"] = [helper.function]
            models.update(helper.models)
            calls.append(
                (f"{helper.function}(session, {', '.join(helper.models)})", helper.returns_note)
            )
        if models:
            first_party[f"{self.package}.models"] = sorted(models)
        noted = [call for call, note in calls if note]
        body: list[str] = []
        if not calls:
            body = [
                f'    """Add development rows here; `db {self.name} seed` runs it in one transaction."""',
                "    return None",
            ]
        elif len(noted) <= 1:
            for call, note in calls:
                body.append(f"    note = {call}" if note else f"    {call}")
            if body[-1].startswith("    note = "):  # ruff's RET504: return it directly
                body[-1] = body[-1].replace("note = ", "return ", 1)
            else:
                body.append("    return note" if noted else "    return None")
        else:
            body.append("    notes = [")
            body.extend(f"        {call}," for call, note in calls if note)
            body.append("    ]")
            body.extend(f"    {call}" for call, note in calls if not note)
            body.append('    return "\\n".join(n for n in notes if n) or None')
        imports = "from sqlalchemy.orm import Session"
        if first_party:
            imports += "\n\n" + import_block(first_party)
        return self._render("seed.py.tmpl", imports=imports, body="\n".join(body))

    def pyproject(self) -> str:
        distributions = ["db-shared", "db-kit", *(m.distribution for m in self.modules)]
        return self._render(
            "pyproject.toml.tmpl",
            dependencies="\n".join(f'    "{d}",' for d in distributions),
            sources="\n".join(f"{d} = {{ workspace = true }}" for d in distributions),
        )

    def files(self) -> dict[str, str]:
        """Relative path -> content of every file of the library."""
        pkg = f"src/{self.package}"
        files = {
            "pyproject.toml": self.pyproject(),
            f"{pkg}/__init__.py": self._render(
                "__init__.py.tmpl",
                imports=import_block(
                    {
                        f"{self.package}.config": ["CONFIG"],
                        f"{self.package}.settings": [self.settings_class],
                        "db_kit.database": ["SQLAlchemyDatabase"],
                    }
                ),
            ),
            f"{pkg}/config.py": self._render(
                "config.py.tmpl",
                imports=import_block(
                    {
                        f"{self.package}.settings": [self.settings_class],
                        "db_kit.config": ["DatabaseConfig"],
                    }
                ),
            ),
            f"{pkg}/settings.py": self._render("settings.py.tmpl"),
            f"{pkg}/seed.py": self.seed(),
            f"{pkg}/py.typed": "",
            f"{pkg}/models/__init__.py": self.models_init(),
            f"{pkg}/models/base.py": self._render("base.py.tmpl"),
            f"{pkg}/migrations/__init__.py": self._render("migrations_init.py.tmpl"),
            f"{pkg}/migrations/env.py": self._render("env.py.tmpl"),
            f"{pkg}/migrations/script.py.mako": (TEMPLATES / "script.py.mako").read_text("utf-8"),
            f"{pkg}/migrations/versions/.keep": "",
            "tests/test_migrations.py": self._render(
                "test_migrations.py.tmpl",
                imports=import_block(
                    {"db_tools.testing": ["alembic_test_fixtures"], self.package: ["CONFIG"]}
                ),
            ),
        }
        for module in self.modules:
            files[f"{pkg}/models/{module.package}.py"] = self.feature_models(module)
        return files


# The root pyproject.toml, edited as text so its layout and comments survive ---------------


def _section(text: str, header: str, contains: str | None = None) -> tuple[int, int] | None:
    """Start and end offsets of the table ``header`` (the first whose body has ``contains``)."""
    pos = 0
    while True:
        m = re.compile(rf"(?m)^{re.escape(header)}[ \t]*$").search(text, pos)
        if m is None:
            return None
        nxt = re.compile(r"(?m)^\[").search(text, m.end())
        end = nxt.start() if nxt else len(text)
        if contains is None or contains in text[m.end() : end]:
            return m.end(), end
        pos = end


def _closing_bracket(text: str, start: int) -> int:
    """Offset of the ``]`` closing the array opened just before ``start``."""
    depth, i = 1, start
    while i < len(text):
        ch = text[i]
        if ch in "\"'":
            i = text.index(ch, i + 1)
        elif ch == "#":
            i = text.index("\n", i)
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError("unclosed array")


def _append_item(text: str, span: tuple[int, int], key: str, item: str) -> str:
    """``text`` with ``"item"`` appended to the array ``key`` of the table at ``span``."""
    m = re.compile(rf"(?m)^{re.escape(key)}[ \t]*=[ \t]*\[").search(text, span[0], span[1])
    if m is None:
        raise ValueError(f"no array {key}")
    opened = m.end()
    close = _closing_bracket(text, opened)
    line_start = text.rfind("\n", 0, close) + 1
    if line_start > opened and not text[line_start:close].strip():
        # A multi-line array whose `]` sits on its own line: one more line before it.
        body_end = opened + len(text[opened:line_start].rstrip())
        comma = "" if text[opened:body_end].endswith(",") or body_end == opened else ","
        return f'{text[:body_end]}{comma}\n    "{item}",\n{text[line_start:]}'
    body_end = opened + len(text[opened:close].rstrip())
    body = text[opened:body_end]
    sep = "" if not body.strip() else (" " if body.endswith(",") else ", ")
    return f'{text[:body_end]}{sep}"{item}"{text[body_end:]}'


def _append_line(text: str, span: tuple[int, int], line: str) -> str:
    """``text`` with ``line`` added after the last non-blank line of the table at ``span``."""
    body_end = span[0] + len(text[span[0] : span[1]].rstrip())
    return f"{text[:body_end]}\n{line}{text[body_end:]}"


def register_in_workspace(text: str, scaffold: Scaffold) -> str:
    """The root ``pyproject.toml`` with the new library added where the others are listed.

    Adds it to ``[project] dependencies`` and ``[tool.uv.sources]`` (so ``uv sync`` installs
    it and its ``db_kit.databases`` entry point), to ruff's ``known-first-party`` and to
    mypy's ``mypy_path`` and strict override. The result is parsed back and compared with
    the intended change; anything else raises ``ScaffoldError`` before a file is written.
    """
    try:
        before = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScaffoldError(f"pyproject.toml is not valid TOML ({exc}); fix it first.") from None
    package, dist = scaffold.package, scaffold.distribution
    members = before.get("tool", {}).get("uv", {}).get("workspace", {}).get("members", [])
    if not any(fnmatch.fnmatch(f"libs/{package}", pattern) for pattern in members):
        raise ScaffoldError(
            f'pyproject.toml\'s [tool.uv.workspace] members do not cover libs/{package}: add "libs/*".'
        )
    expected = copy.deepcopy(before)
    edited = text
    edits: list[tuple[Callable[[dict[str, Any]], Any], Callable[[str], str]]] = []

    def array(header: str, key: str, item: str, contains: str | None = None) -> None:
        def apply(doc: dict[str, Any]) -> None:
            target = doc
            for part in header.strip("[]").split("."):
                target = target[part]
            if isinstance(target, list):
                target = next(t for t in target if contains is None or t.get("strict"))
            if item not in target[key]:
                target[key].append(item)

        def edit(current: str) -> str:
            span = _section(current, header, contains)
            if span is None:
                raise ValueError(f"no {header}")
            m = re.compile(rf"(?m)^{re.escape(key)}[ \t]*=[ \t]*\[").search(
                current, span[0], span[1]
            )
            if (
                m is not None
                and f'"{item}"' in current[m.end() : _closing_bracket(current, m.end())]
            ):
                return current
            return _append_item(current, span, key, item)

        edits.append((apply, edit))

    array("[project]", "dependencies", dist)
    tool = before.get("tool", {})
    if "known-first-party" in tool.get("ruff", {}).get("lint", {}).get("isort", {}):
        array("[tool.ruff.lint.isort]", "known-first-party", package)
    if "mypy_path" in tool.get("mypy", {}):
        array("[tool.mypy]", "mypy_path", f"libs/{package}/src")
    if any(o.get("strict") for o in tool.get("mypy", {}).get("overrides", [])):
        array("[[tool.mypy.overrides]]", "module", f"{package}.*", contains="strict = true")

    def add_source(doc: dict[str, Any]) -> None:
        doc.setdefault("tool", {}).setdefault("uv", {}).setdefault("sources", {})[dist] = {
            "workspace": True
        }

    def edit_source(current: str) -> str:
        span = _section(current, "[tool.uv.sources]")
        if span is None:
            return (
                current.rstrip("\n") + f"\n\n[tool.uv.sources]\n{dist} = {{ workspace = true }}\n"
            )
        if re.search(rf"(?m)^{re.escape(dist)}[ \t]*=", current[span[0] : span[1]]):
            return current
        return _append_line(current, span, f"{dist} = {{ workspace = true }}")

    edits.append((add_source, edit_source))
    try:
        for apply, edit in edits:
            apply(expected)
            edited = edit(edited)
        after = tomllib.loads(edited)
    except (ValueError, KeyError, StopIteration, tomllib.TOMLDecodeError) as exc:
        raise ScaffoldError(
            f"Could not add {dist} to pyproject.toml automatically ({exc}); nothing was "
            "written. Check its [project] dependencies and [tool.uv.sources] tables."
        ) from None
    if after != expected:
        raise ScaffoldError(
            f"Adding {dist} to pyproject.toml would change more than intended; nothing was "
            "written. Add it by hand to [project] dependencies and [tool.uv.sources]."
        )
    return edited


# Writing ---------------------------------------------------------------------------------


def write_library(scaffold: Scaffold, root_pyproject: str) -> None:
    """Render into a temporary folder, move it into place, then update pyproject.toml."""
    libs = scaffold.lib_dir.parent
    staging = Path(tempfile.mkdtemp(prefix=f".{scaffold.package}.", dir=libs))
    try:
        for relative, content in scaffold.files().items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
        staging.chmod(0o755)
        staging.rename(scaffold.lib_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    pyproject = scaffold.root / "pyproject.toml"
    try:
        tmp = pyproject.with_name(f".pyproject.toml.{uuid.uuid4().hex[:8]}")
        tmp.write_text(root_pyproject, encoding="utf-8")
        tmp.replace(pyproject)
    except BaseException:
        shutil.rmtree(scaffold.lib_dir, ignore_errors=True)
        raise


def write_initial_revision(scaffold: Scaffold) -> Path:
    """Autogenerate the first revision of the new library (against a shadow database).

    The library is imported from its source folder (it is not installed yet); the server
    is the one its settings point at (the embedded one in development).
    """
    from db_kit.config import DatabaseConfig
    from db_kit.migrations.migrator import Migrator

    src = str(scaffold.lib_dir / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    importlib.invalidate_caches()
    config = importlib.import_module(f"{scaffold.package}.config").CONFIG
    assert isinstance(config, DatabaseConfig)
    # generate builds the migrations in a shadow database beside the target (never the
    # target itself), so leftovers in the target cannot leak into the revision.
    from db_tools.dev import provide_url

    provide_url(config)  # development with no URL: the embedded server's database
    migrator = Migrator(config)
    script = migrator.generate(INITIAL_MESSAGE) or migrator.create(INITIAL_MESSAGE)
    return Path(script.path)


SYNC_STEPS: tuple[tuple[str, ...], ...] = (("lock",), ("sync", "--frozen", "--all-packages"))


def uv_executable() -> list[str] | None:
    """uv as ``uv run`` exposes it (``$UV``), on PATH, or as pip's ``python -m uv``."""
    found = os.environ.get("UV") or shutil.which("uv")
    if found:
        return [found]
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    return None


def sync_commands() -> str:
    return " && ".join("uv " + " ".join(step) for step in SYNC_STEPS)


def install(root: Path) -> None:
    """``uv lock`` then ``uv sync``: installs the library so ``db`` discovers its entry point."""
    uv = uv_executable()
    if uv is None:
        raise ScaffoldError(f"uv was not found; run `{sync_commands()}` once it is installed.")
    for step in SYNC_STEPS:
        try:
            result = subprocess.run([*uv, *step], cwd=root, timeout=UV_TIMEOUT_SECONDS, check=False)
        except subprocess.TimeoutExpired:
            raise ScaffoldError(
                f"`uv {' '.join(step)}` took over {UV_TIMEOUT_SECONDS} s; run "
                f"`{sync_commands()}` yourself."
            ) from None
        if result.returncode != 0:
            raise ScaffoldError(
                f"`uv {' '.join(step)}` failed (exit {result.returncode}, see above); fix the "
                f"cause and run `{sync_commands()}`."
            )
