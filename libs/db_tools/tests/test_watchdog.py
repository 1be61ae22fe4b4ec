"""The watchdog every test server uses: cleanup runs once the watched process is gone,
and not at all when its guard fails first."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from db_tools.watchdog import after_exit


def _wait_for(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return path.exists()


def test_cleanup_runs_after_the_process_ends(tmp_path: Path) -> None:
    marker = tmp_path / "cleaned"
    child = subprocess.Popen(["sleep", "0.3"])
    after_exit(child.pid, f"touch '{marker}'")
    assert not marker.exists()  # still running: nothing cleaned yet
    child.wait()
    assert _wait_for(marker, 5)


def test_a_failing_guard_ends_the_watch_without_cleanup(tmp_path: Path) -> None:
    marker = tmp_path / "cleaned"
    child = subprocess.Popen(["sleep", "2"])
    after_exit(child.pid, f"touch '{marker}'", while_alive="false")
    child.wait()
    time.sleep(1.5)
    assert not marker.exists()
