"""The Makefile syncs the environment only when uv.lock or a pyproject.toml changed, and runs
`db list` only in the target that needs the database list.

Runs the repository's Makefile in a temporary folder with a stand-in `uv` on PATH that
records its arguments, so nothing here touches the real environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

FAKE_UV = """#!/bin/sh
echo "$*" >> "$UV_LOG"
case "$1" in
  sync) mkdir -p .venv ;;
  run) shift; [ "$1" = --frozen ] && shift
       if [ "$1 $2" = "db list" ]; then printf 'core\\tDATABASE_URL\\tx\\nbibikos\\tB\\ty\\n'; fi ;;
esac
"""


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = tmp_path / "ws"
    (root / "libs" / "core_db").mkdir(parents=True)
    shutil.copy(ROOT / "Makefile", root / "Makefile")
    for name in ("pyproject.toml", "uv.lock", "libs/core_db/pyproject.toml"):
        (root / name).write_text("# stand-in\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    uv = bin_dir / "uv"
    uv.write_text(FAKE_UV)
    uv.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "UV_", "VIRTUAL_ENV"))}
    env |= {"PATH": f"{bin_dir}:{env['PATH']}", "UV_LOG": str(tmp_path / "uv.log")}
    (tmp_path / "uv.log").write_text("")
    return root, env


def _make(root: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout + done.stderr


def _calls(env: dict[str, str]) -> list[str]:
    log = Path(env["UV_LOG"])
    calls = log.read_text().splitlines()
    log.write_text("")
    return calls


def test_install_syncs_once_then_only_when_a_lock_or_pyproject_changes(
    workspace: tuple[Path, dict[str, str]],
) -> None:
    root, env = workspace
    _make(root, env, "install")  # a fresh clone: no .venv yet
    assert _calls(env) == ["sync --frozen --all-packages"]
    assert (root / ".venv" / ".synced").exists()

    assert "uv sync" not in _make(root, env, "-n", "install")
    _make(root, env, "install")
    _make(root, env, "db-core-status")
    assert _calls(env) == ["run --frozen db core status"]  # no sync, no `db list`

    later = time.time() + 5
    os.utime(root / "libs" / "core_db" / "pyproject.toml", (later, later))
    assert "sync --frozen --all-packages" in _make(root, env, "-n", "install")
    _make(root, env, "install")
    assert _calls(env) == ["sync --frozen --all-packages"]

    os.utime(root / "uv.lock", (later + 5, later + 5))
    _make(root, env, "install")
    assert _calls(env) == ["sync --frozen --all-packages"]


def test_only_migrate_all_reads_the_database_list(
    workspace: tuple[Path, dict[str, str]],
) -> None:
    root, env = workspace
    _make(root, env, "install")
    _calls(env)
    _make(root, env, "help")
    _make(root, env, "-n", "pytest")
    assert _calls(env) == []
    _make(root, env, "migrate-all")
    calls = _calls(env)
    assert calls[0] == "run --frozen db list"
    assert "run --frozen db core migrate" in calls
    assert "run --frozen db bibikos status" in calls
