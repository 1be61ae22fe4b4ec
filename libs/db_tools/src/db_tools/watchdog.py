"""Clean up after a process however it ends: the servers and engines tests start must stop
by themselves, even when pytest is killed."""

from __future__ import annotations

import subprocess

__all__ = ["after_exit"]


def after_exit(pid: int, cleanup: str, *, while_alive: str | None = None) -> None:
    """Run the shell command ``cleanup`` once process ``pid`` has ended.

    A detached ``sh`` polls ``pid`` every second, in its own session so a signal to the
    test's process group does not stop it. ``while_alive`` (a shell condition) is checked
    on each poll: when it fails, the watch ends without cleaning up (what it guards is
    already gone, e.g. a daemon that exited, whose pid might be reused).
    """
    guard = f"{while_alive} || exit 0; " if while_alive else ""
    script = f"while kill -0 {pid} 2>/dev/null; do {guard}sleep 1; done; {cleanup}"
    subprocess.Popen(
        ["/bin/sh", "-c", script],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
