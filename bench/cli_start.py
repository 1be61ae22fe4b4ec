"""Start-up of the ``db`` command: ``db --help`` against ``alembic --help``, in one run.

    uv run python bench/cli_start.py [--rounds 7] [--warmup 1] [--extra "core --help"]

Both programs run as the console scripts of this environment (``.venv/bin/db`` and
``.venv/bin/alembic``), each round once each, in alternating order so a busy moment of the
machine falls on both. Prints each round's wall times, the medians, and the line
``ratio cli-start = X`` (median ``db --help`` / median ``alembic --help``; target at most
1.0). ``--extra ARGS`` also times ``db ARGS`` (e.g. a database group's help) for the report.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60


def script(name: str) -> str:
    """The console script ``name`` beside this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        sys.exit(f"{name} not found: run this with `uv run python bench/cli_start.py`.")
    return found


def wall(command: list[str]) -> float:
    """Seconds from start to exit of ``command`` (output discarded; must succeed)."""
    start = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=TIMEOUT,
        check=False,
        env={**os.environ, "COLUMNS": "80"},
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed ({done.returncode}): {done.stderr.decode()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--extra", action="append", default=[], help="also time `db ARGS`")
    args = parser.parse_args()

    commands = {
        "db --help": [script("db"), "--help"],
        "alembic --help": [script("alembic"), "--help"],
    }
    for extra in args.extra:
        commands[f"db {extra}"] = [script("db"), *shlex.split(extra)]
    names = list(commands)
    for _ in range(args.warmup):  # file-system caches, .pyc files
        for name in names:
            wall(commands[name])

    times: dict[str, list[float]] = {name: [] for name in names}
    width = max(len(n) for n in names)
    print(f"{args.rounds} rounds, interleaved (order alternates), wall seconds")
    for i in range(args.rounds):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            times[name].append(wall(commands[name]))
        print(f"round {i + 1:>2}  " + "  ".join(f"{n} {times[n][-1]:.3f}" for n in names))

    medians = {name: statistics.median(values) for name, values in times.items()}
    for name in names:
        spread = f"min {min(times[name]):.3f}  max {max(times[name]):.3f}"
        print(f"median {name:<{width}}  {medians[name]:.3f} s  ({spread})")
    ratio = medians["db --help"] / medians["alembic --help"]
    verdict = "meets" if ratio <= 1.0 else "ABOVE"
    print(f"db --help / alembic --help: {verdict} the 1.0 target")
    print(f"ratio cli-start = {ratio:.2f}")


if __name__ == "__main__":
    main()
