"""Registering a new library in the root ``pyproject.toml``, edited with tomlkit.

tomlkit keeps the file's layout and comments: the new entries land at the end of the
arrays and tables that list the other members, and nothing else changes.
"""

from __future__ import annotations

import copy
import fnmatch
import tomllib
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import Array, InlineTable

from db_tools.scaffold.errors import ScaffoldError
from db_tools.scaffold.render import Scaffold

__all__ = ["register_in_workspace"]


def _workspace_source() -> InlineTable:
    """``{ workspace = true }`` spelled as the root's other sources are."""
    item = tomlkit.parse("source = { workspace = true }\n")["source"]
    assert isinstance(item, InlineTable)
    return item


def _array(table: Any, key: str) -> Array:
    value = table[key]
    if not isinstance(value, Array):
        raise TypeError(f"{key} is not an array")
    return value


def _append(array: Array, item: str) -> None:
    if item not in array:
        array.append(item)


def _strict_override(mypy: Any) -> Any:
    return next(o for o in mypy["overrides"] if o.get("strict"))


def register_in_workspace(text: str, scaffold: Scaffold) -> str:
    """The root ``pyproject.toml`` with the new library added where the others are listed.

    Adds it to ``[project] dependencies`` and ``[tool.uv.sources]`` (so ``uv sync`` installs
    it and its ``db_kit.databases`` entry point), to ruff's ``known-first-party`` and to
    mypy's ``mypy_path`` and strict override. The result is parsed back and compared with
    the intended change; anything else raises ``ScaffoldError`` before a file is written.
    Registering a library twice changes nothing.
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
    tool = before.get("tool", {})
    ruff_isort = "known-first-party" in tool.get("ruff", {}).get("lint", {}).get("isort", {})
    mypy_path = "mypy_path" in tool.get("mypy", {})
    mypy_strict = any(o.get("strict") for o in tool.get("mypy", {}).get("overrides", []))

    # What the file must parse to afterwards: the same document plus these entries.
    expected: dict[str, Any] = copy.deepcopy(before)

    def add(items: list[Any], item: str) -> None:
        if item not in items:
            items.append(item)

    try:
        add(expected["project"]["dependencies"], dist)
        expected.setdefault("tool", {}).setdefault("uv", {}).setdefault("sources", {})[dist] = {
            "workspace": True
        }
        if ruff_isort:
            add(expected["tool"]["ruff"]["lint"]["isort"]["known-first-party"], package)
        if mypy_path:
            add(expected["tool"]["mypy"]["mypy_path"], f"libs/{package}/src")
        if mypy_strict:
            add(_strict_override(expected["tool"]["mypy"])["module"], f"{package}.*")

        doc: Any = tomlkit.parse(text)
        _append(_array(doc["project"], "dependencies"), dist)
        if "tool" not in doc:
            doc["tool"] = tomlkit.table(is_super_table=True)
        if "uv" not in doc["tool"]:
            doc["tool"]["uv"] = tomlkit.table(is_super_table=True)
        sources = doc["tool"]["uv"].setdefault("sources", tomlkit.table())
        if dist not in sources:
            sources[dist] = _workspace_source()
        if ruff_isort:
            _append(_array(doc["tool"]["ruff"]["lint"]["isort"], "known-first-party"), package)
        if mypy_path:
            _append(_array(doc["tool"]["mypy"], "mypy_path"), f"libs/{package}/src")
        if mypy_strict:
            _append(_array(_strict_override(doc["tool"]["mypy"]), "module"), f"{package}.*")
        edited = tomlkit.dumps(doc)
        after = tomllib.loads(edited)
    except (KeyError, TypeError, StopIteration, TOMLKitError, tomllib.TOMLDecodeError) as exc:
        reason = f"no {exc}" if isinstance(exc, KeyError) else str(exc) or type(exc).__name__
        raise ScaffoldError(
            f"Could not add {dist} to pyproject.toml automatically ({reason}); nothing was "
            "written. Check its [project] dependencies and [tool.uv.sources] tables."
        ) from None
    if after != expected:
        raise ScaffoldError(
            f"Adding {dist} to pyproject.toml would change more than intended; nothing was "
            "written. Add it by hand to [project] dependencies and [tool.uv.sources]."
        )
    return edited
