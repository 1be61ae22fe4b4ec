"""Which database libraries this environment has: the ``db_kit.databases`` entry points.

``discover`` loads every config (and so imports each library's settings and the toolkit);
``listings`` only reads each config's ``name`` and ``description`` from its source, so
``db --help`` can list the databases without importing any of them.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from db_kit.config import DatabaseConfig

ENTRY_POINT_GROUP = "db_kit.databases"

__all__ = [
    "ENTRY_POINT_GROUP",
    "Listing",
    "database_entry_points",
    "discover",
    "listings",
    "load",
    "read_listing",
]


def database_entry_points() -> list[EntryPoint]:
    """The ``db_kit.databases`` entry points installed here (nothing is imported)."""
    return list(entry_points(group=ENTRY_POINT_GROUP))


def load(ep: EntryPoint) -> DatabaseConfig | None:
    """The config an entry point names, or None when it is not a ``DatabaseConfig``."""
    from db_kit.config import DatabaseConfig

    config = ep.load()
    return config if isinstance(config, DatabaseConfig) else None


def discover() -> dict[str, DatabaseConfig]:
    """Every database config installed in this environment, by name."""
    found: dict[str, DatabaseConfig] = {}
    for ep in database_entry_points():
        config = load(ep)
        if config is not None:
            found[config.name] = config
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class Listing:
    """A database as ``db --help`` lists it, read without importing its library."""

    name: str
    description: str
    entry_point: EntryPoint


def _module_file(module: str) -> Path | None:
    """The source file of ``module``, found without importing it or its parent packages."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin) if spec.origin else None
    folders = [Path(p) for p in spec.submodule_search_locations or ()]
    for part in rest[:-1]:
        folders = [f / part for f in folders if (f / part / "__init__.py").is_file()]
    for folder in folders:
        for candidate in (folder / f"{rest[-1]}.py", folder / rest[-1] / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def read_listing(ep: EntryPoint) -> Listing | None:
    """``name`` and ``description`` of the ``DatabaseConfig(...)`` call the entry point
    names, when both are literals in its module; None when they cannot be read so."""
    module, _, attr = ep.value.partition(":")
    path = _module_file(module.strip())
    if path is None or not attr.strip():
        return None
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if not (
            isinstance(node, ast.Assign | ast.AnnAssign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "DatabaseConfig"
        ):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if not any(isinstance(t, ast.Name) and t.id == attr.strip() for t in targets):
            continue
        values: dict[str, object] = {}
        for keyword in node.value.keywords:
            if keyword.arg in {"name", "description"}:
                try:
                    values[keyword.arg] = ast.literal_eval(keyword.value)
                except ValueError:
                    return None
        name, description = values.get("name"), values.get("description", "")
        if isinstance(name, str) and isinstance(description, str):
            return Listing(name, description, ep)
        return None
    return None


def listings() -> tuple[dict[str, Listing], list[EntryPoint]]:
    """Databases listed from their sources, by name, and the entry points that could not
    be read that way (their configs must be loaded to be listed)."""
    read: dict[str, Listing] = {}
    unread: list[EntryPoint] = []
    for ep in database_entry_points():
        listing = read_listing(ep)
        if listing is None:
            unread.append(ep)
        else:
            read[listing.name] = listing
    return read, unread
