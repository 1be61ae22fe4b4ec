"""`db --help` lists every database without importing SQLAlchemy, Alembic or any db lib.

bench/cli_start.py measures the time; this checks what makes it cheap: the top-level help
reads each database's name and description from its config's source, and a database's
group is built only when a command names it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from db_tools.discovery import ENTRY_POINT_GROUP, discover, listings, read_listing

HEAVY = ("sqlalchemy", "alembic", "pydantic_settings", "psycopg", "db_kit", "core_db", "bibikos_db")

PROBE = """
import json, sys
from typer.testing import CliRunner
from db_tools.cli import build_app
result = CliRunner().invoke(build_app(), sys.argv[1:])
print(json.dumps({"code": result.exit_code, "output": result.output,
                  "modules": sorted(m.partition(".")[0] for m in sys.modules)}))
"""


def _probe(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_top_level_help_imports_no_database_stack() -> None:
    result = _probe("--help")
    assert result["code"] == 0
    modules = set(result["modules"])  # type: ignore[arg-type]
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    output = " ".join(str(result["output"]).split())
    for name, config in discover().items():
        assert f"{name} {' '.join(config.description.split()[:3])}" in output


def test_a_database_group_is_built_when_named() -> None:
    result = _probe("core", "--help")
    assert result["code"] == 0
    assert "registry" in str(result["output"])
    assert "core_db" in result["modules"]  # type: ignore[operator]
    assert "bibikos_db" not in result["modules"]  # type: ignore[operator]


def test_listings_match_the_loaded_configs() -> None:
    read, unread = listings()
    assert unread == []
    assert {n: entry.description for n, entry in read.items()} == {
        n: c.description for n, c in discover().items()
    }


def test_a_config_that_is_not_literal_is_left_to_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "probe_db"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    (package / "config.py").write_text(
        "NAME = 'probe'\n"
        "CONFIG = DatabaseConfig(name='probe', description='A probe.', models='m')\n"
        "OTHER = DatabaseConfig(name=NAME, description='x')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    listing = read_listing(EntryPoint("probe", "probe_db.config:CONFIG", ENTRY_POINT_GROUP))
    assert listing is not None
    assert (listing.name, listing.description) == ("probe", "A probe.")
    assert "probe_db" not in sys.modules
    other = EntryPoint("probe", "probe_db.config:OTHER", ENTRY_POINT_GROUP)
    assert read_listing(other) is None
    missing = EntryPoint("probe", "probe_db.nowhere:CONFIG", ENTRY_POINT_GROUP)
    assert read_listing(missing) is None
