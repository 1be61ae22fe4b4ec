"""The pytest plugin's testcontainers branch, run for real.

With the engine up, a second pytest process runs a small representative set of
database-backed tests (migrations of both databases, the shared tables, the unit of work
and error translation, auth over HTTP); its plugin must take the testcontainers branch
(the header names it), the tests must pass on that server, and its container must be gone
when it ends. The rest of the suite proves the embedded branch (or TEST_DATABASE_URL).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from db_tools.containers import Engine, ensure_image
from db_tools.testing import DEFAULT_POSTGRES_IMAGE

pytestmark = [pytest.mark.slow, pytest.mark.containers, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
REPRESENTATIVE = (
    "libs/core_db/tests/test_migrations.py",
    "libs/bibikos_db/tests/test_migrations.py",
    "tests/test_shared_tables.py",
    "libs/db_kit/tests/test_errors_and_database.py",
    "tests/api/test_auth.py",
)


def _test_containers(engine: Engine) -> set[str]:
    label = "label=org.testcontainers.lang=python"
    return set(engine.run("ps", "-a", "-q", "--filter", label).stdout.split())


def test_database_tests_pass_on_the_testcontainers_branch(engine: Engine) -> None:
    image = os.environ.get("DB_TEST_POSTGRES_IMAGE") or DEFAULT_POSTGRES_IMAGE
    ensure_image(engine, image)  # the stand-in, where nothing can be pulled
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("DATABASE_URL")
        and k not in {"DB_TEST_NO_DOCKER", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST"}
    }
    before = _test_containers(engine)
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *REPRESENTATIVE],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=540,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    took = time.monotonic() - began
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    header = next((line for line in output.splitlines() if line.startswith("postgresql: ")), "")
    assert header.startswith(f"postgresql: testcontainers ({image}"), header or output[:2000]
    assert " at 127.0.0.1:" in header  # an engine on this machine: its published port
    assert " passed" in output.splitlines()[-1]
    assert "skipped" not in output.splitlines()[-1]
    # The run removed its container (Ryuk or, without it, the plugin's own cleanup); this
    # run's server may be a testcontainers one too, so only new containers count.
    assert _test_containers(engine) <= before
    print(f"testcontainers branch: {output.splitlines()[-1].strip()} ({took:.1f} s)")
