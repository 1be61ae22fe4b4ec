"""The database name ``db new NAME`` accepts: checked before anything is written."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import keyword
import re
import sys
from pathlib import Path

from db_tools.scaffold.errors import ScaffoldError

__all__ = ["MAX_NAME_LENGTH", "NAME_PATTERN", "RESERVED_NAMES", "check_name"]

MAX_NAME_LENGTH = 30
# Lower-case words joined by single underscores: it names a package, an env var and a CLI group.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
# Commands of `db` itself: a database group of that name would shadow them.
RESERVED_NAMES = frozenset({"new", "list"})


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
