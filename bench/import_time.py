"""Benchmark: importing my_api against importing the libraries it is built on.

Each sample is a fresh interpreter (``python -c "import ..."``, this virtualenv's Python)
importing either ``my_api.main`` or the baseline ``fastapi, sqlalchemy.ext.asyncio,
psycopg``; rounds alternate which goes first, and the CPU time (user + system) and the wall
time of every child are recorded. CPU time is what the ratio uses: on a shared machine the
wall time of a start-up says more about the neighbours than about the imports.

    uv run python bench/import_time.py [--rounds 15] [--importtime]

Prints the medians and ``ratio import = X`` (my_api / baseline CPU, target at most 1.3).
``--importtime`` then prints the modules my_api adds that take longest to import
(``python -X importtime``, cumulative microseconds, one run).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

SUBJECTS = {
    "my_api": "import my_api.main",
    "baseline": "import fastapi, sqlalchemy.ext.asyncio, psycopg",
}
TARGET = 1.3


def sample(code: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one fresh interpreter running ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def slowest_imports(code: str, baseline: str, shown: int = 25) -> list[tuple[int, str]]:
    """Modules ``code`` imports that ``baseline`` does not, by cumulative import time."""

    def times(statement: str) -> dict[str, tuple[int, int]]:
        err = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", statement],
            check=True,
            capture_output=True,
            text=True,
        ).stderr
        found: dict[str, tuple[int, int]] = {}
        for line in err.splitlines():
            if not line.startswith("import time:") or "|" not in line:
                continue
            head, cumulative, name = (part.strip() for part in line.split("|", 2))
            self_us = head.removeprefix("import time:").strip()
            if self_us.isdigit():
                found[name] = (int(self_us), int(cumulative))
        return found

    mine, theirs = times(code), times(baseline)
    extra = [(cumulative, name) for name, (_, cumulative) in mine.items() if name not in theirs]
    return sorted(extra, reverse=True)[:shown]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="samples per subject")
    parser.add_argument(
        "--importtime", action="store_true", help="list my_api's slowest extra imports"
    )
    args = parser.parse_args()

    for code in SUBJECTS.values():  # warm-up: bytecode caches written, files in page cache
        sample(code)
    cpu: dict[str, list[float]] = {name: [] for name in SUBJECTS}
    wall: dict[str, list[float]] = {name: [] for name in SUBJECTS}
    names = list(SUBJECTS)
    for i in range(args.rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            c, w = sample(SUBJECTS[name])
            cpu[name].append(c)
            wall[name].append(w)
    print(f"{args.rounds} fresh interpreters each, alternating; medians (min-max)")
    print(f"{'subject':<9} {'cpu s':>6} {'wall s':>6}  import")
    for name, code in SUBJECTS.items():
        c, w = statistics.median(cpu[name]), statistics.median(wall[name])
        spread = f"cpu {min(cpu[name]):.3f}-{max(cpu[name]):.3f}"
        print(f"{name:<9} {c:>6.3f} {w:>6.3f}  {code}  ({spread})")
    ratio = statistics.median(cpu["my_api"]) / statistics.median(cpu["baseline"])
    wall_ratio = statistics.median(wall["my_api"]) / statistics.median(wall["baseline"])
    verdict = "meets" if ratio <= TARGET else "ABOVE"
    print(f"wall   my_api / baseline = {wall_ratio:.3f}")
    print(
        f"ratio import = {ratio:.3f} ({verdict} the {TARGET} target; CPU time, my_api / baseline)"
    )
    if args.importtime:
        print("my_api's slowest imports the baseline does not make (cumulative ms, one run):")
        for cumulative, name in slowest_imports(SUBJECTS["my_api"], SUBJECTS["baseline"]):
            print(f"  {cumulative / 1000:8.1f}  {name}")


if __name__ == "__main__":
    main()
