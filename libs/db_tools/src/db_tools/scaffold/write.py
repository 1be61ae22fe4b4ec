"""Writing the new library, its first revision, and installing it with uv."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from db_tools.scaffold.errors import ScaffoldError
from db_tools.scaffold.render import Scaffold

__all__ = [
    "INITIAL_MESSAGE",
    "SYNC_STEPS",
    "UV_TIMEOUT_SECONDS",
    "install",
    "sync_commands",
    "uv_executable",
    "write_initial_revision",
    "write_library",
]

INITIAL_MESSAGE = "initial schema"
UV_TIMEOUT_SECONDS = 600


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
