"""A Docker engine, the stand-ins and the repository's images, once per run.

The engine comes up the way the PgBouncer and Chromium tests get their programs: Debian's
``docker.io`` and ``docker-compose`` are installed as root when missing (no PostgreSQL
package upgraded), ``dockerd`` is started when none answers and stopped at the end if this
run started it. Where that cannot happen the tests skip with the reason. Timings and image
sizes are printed at the end of the run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from db_tools.containers import (
    IMAGES,
    POSTGRES_IMAGE,
    PYTHON_IMAGE,
    ContainersUnavailable,
    Engine,
    build_image,
    ensure_engine,
    ensure_image,
)

REPORT: dict[str, str] = {}


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    began = time.monotonic()
    try:
        engine = ensure_engine()
    except ContainersUnavailable as exc:
        pytest.skip(f"no Docker engine here: {exc}")
    REPORT["engine"] = (
        f"{engine.docker}, {' '.join(engine.compose)}; ready in {time.monotonic() - began:.1f} s"
        + "".join(f", {step} {seconds:.1f} s" for step, seconds in engine.timings.items())
    )
    yield engine
    if engine.started is not None:
        engine.stop()
        REPORT["engine"] += "; stopped (this run started it)"


@pytest.fixture(scope="session")
def images(engine: Engine) -> dict[str, str]:
    """Every image the Dockerfiles and compose files name, built or ensured: tag -> how."""
    done: dict[str, str] = {}
    for name in (PYTHON_IMAGE, POSTGRES_IMAGE):
        before = dict(engine.timings)
        try:
            done[name] = ensure_image(engine, name)
        except ContainersUnavailable as exc:
            pytest.skip(f"{name} can neither be pulled nor stood in for: {exc}")
        spent = {k: v for k, v in engine.timings.items() if k not in before}
        REPORT[name] = done[name].split(" (pull failed")[0] + "".join(
            f", {step} {seconds:.0f} s" for step, seconds in spent.items()
        )
    for image in IMAGES:
        seconds = build_image(engine, image.dockerfile, image.tag)
        size = engine.image_size(image.tag) / 1e6
        done[image.tag] = "built"
        REPORT[image.tag] = f"built in {seconds:.0f} s, {size:.0f} MB"
    return done


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("containers")
        for what, line in REPORT.items():
            terminalreporter.write_line(f"{what}: {line}")
