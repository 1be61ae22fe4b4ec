"""The files of a new database library, rendered from ``templates/`` as ruff would lay them out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template

from db_tools.scaffold.modules import SharedModule

__all__ = ["LINE_LENGTH", "TEMPLATES", "Scaffold", "from_import", "import_block"]

TEMPLATES = Path(__file__).parent / "templates"
LINE_LENGTH = 100


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
