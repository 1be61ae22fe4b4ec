"""``db new NAME``: scaffold ``libs/NAME_db``, register it in the workspace, write its first revision.

Replaces the copy-and-rename steps of adding a database by hand. Everything that can be
wrong with the request (the name, the modules, the root ``pyproject.toml``) is checked
before the first file is written; the library is rendered in a temporary folder and moved
into place in one rename, so a failure never leaves half a library behind.

- ``names``: the checks on ``NAME``;
- ``modules``: the shared feature modules, read from the workspace sources;
- ``render``: the library's files, from ``templates/``;
- ``workspace``: the root ``pyproject.toml`` edit (tomlkit, layout and comments kept);
- ``write``: writing the files and the initial revision, ``uv lock`` + ``uv sync``.
"""

from __future__ import annotations

from db_tools.scaffold.errors import ScaffoldError
from db_tools.scaffold.modules import (
    SeedHelper,
    SharedModule,
    SharedTable,
    choose_modules,
    shared_modules,
)
from db_tools.scaffold.names import MAX_NAME_LENGTH, NAME_PATTERN, RESERVED_NAMES, check_name
from db_tools.scaffold.render import LINE_LENGTH, TEMPLATES, Scaffold, from_import, import_block
from db_tools.scaffold.workspace import register_in_workspace
from db_tools.scaffold.write import (
    INITIAL_MESSAGE,
    SYNC_STEPS,
    UV_TIMEOUT_SECONDS,
    install,
    sync_commands,
    uv_executable,
    write_initial_revision,
    write_library,
)

__all__ = [
    "INITIAL_MESSAGE",
    "LINE_LENGTH",
    "MAX_NAME_LENGTH",
    "NAME_PATTERN",
    "RESERVED_NAMES",
    "SYNC_STEPS",
    "TEMPLATES",
    "UV_TIMEOUT_SECONDS",
    "Scaffold",
    "ScaffoldError",
    "SeedHelper",
    "SharedModule",
    "SharedTable",
    "check_name",
    "choose_modules",
    "from_import",
    "import_block",
    "install",
    "register_in_workspace",
    "shared_modules",
    "sync_commands",
    "uv_executable",
    "write_initial_revision",
    "write_library",
]
