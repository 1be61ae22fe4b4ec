"""The compose stack (docker-compose.yml at the root), run for real.

PostgreSQL becomes healthy, the migration container runs to completion (its exit code and
output are the test's), then both apps start on the migrated databases and a user
registers and logs in through each app's container; a second migration run has nothing to
do, and ``down -v`` leaves no container, network or volume of the project. A failing
migration stops ``up`` before either app starts. Traffic goes only to ports the stack
publishes on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from db_tools.containers import Engine
from db_tools.testing import unused_port

pytestmark = [pytest.mark.slow, pytest.mark.containers, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
APPS = ("my_api", "bibikos_api")
Compose = Callable[..., subprocess.CompletedProcess[str]]


def _project_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("DATABASE_URL") and k not in {"ENVIRONMENT", "COMPOSE_FILE"}
    }
    env["POSTGRES_PASSWORD"] = uuid.uuid4().hex  # never a placeholder: production refuses those
    env["MY_API_PORT"] = str(unused_port())
    env["BIBIKOS_API_PORT"] = str(unused_port())
    return env


@pytest.fixture
def stack(engine: Engine, images: dict[str, str]) -> Iterator[tuple[Compose, dict[str, str], str]]:
    """A compose command for a project of this test's own, taken down (-v) at the end."""
    project = f"dltest{uuid.uuid4().hex[:8]}"
    env = _project_env()

    def compose(*args: str, files: tuple[Path, ...] = (), timeout: float = 300):
        command = [*engine.compose, "-p", project, "-f", str(COMPOSE_FILE)]
        for extra in files:
            command += ["-f", str(extra)]
        return subprocess.run(
            [*command, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    yield compose, env, project
    compose("down", "-v", "--remove-orphans", timeout=120)


def _containers(engine: Engine, project: str, service: str | None = None) -> list[str]:
    filters = ["--filter", f"label=com.docker.compose.project={project}"]
    if service:
        filters += ["--filter", f"label=com.docker.compose.service={service}"]
    return engine.run("ps", "-a", "-q", *filters).stdout.split()


def _state(engine: Engine, container: str, field: str) -> str:
    return engine.run("inspect", "--format", f"{{{{{field}}}}}", container).stdout.strip()


def _wait_healthy(engine: Engine, container: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = _state(engine, container, ".State.Health.Status")
        if status == "healthy":
            return
        time.sleep(0.5)
    logs = engine.run("logs", "--tail", "30", container, check=False)
    pytest.fail(f"{container} is {status!r} after {timeout:.0f} s:\n{logs.stdout}{logs.stderr}")


def _left_behind(engine: Engine, project: str) -> list[str]:
    label = f"label=com.docker.compose.project={project}"
    found = _containers(engine, project)
    found += engine.run("network", "ls", "-q", "--filter", label).stdout.split()
    found += engine.run("volume", "ls", "-q", "--filter", label).stdout.split()
    found += [
        v for v in engine.run("volume", "ls", "-q").stdout.split() if v.startswith(f"{project}_")
    ]
    found += [
        n
        for n in engine.run("network", "ls", "--format", "{{.Name}}").stdout.split()
        if n.startswith(f"{project}_")
    ]
    return found


def test_stack_migrates_then_serves_both_apps(
    engine: Engine, stack: tuple[Compose, dict[str, str], str]
) -> None:
    compose, env, project = stack
    began = time.monotonic()
    up = compose("up", "-d", "--no-build")  # the images fixture built them with BuildKit
    (migrate,) = _containers(engine, project, "migrate")
    logs = engine.run("logs", migrate).stdout
    exit_code = int(_state(engine, migrate, ".State.ExitCode"))
    assert exit_code == 0, f"migrate exited {exit_code}:\n{logs}\n{up.stderr}"
    assert up.returncode == 0, up.stdout + up.stderr
    assert "done: core, bibikos at head." in logs
    for line in ("core: deployed (empty) -> ", "bibikos: deployed (empty) -> "):
        assert line in logs
    postgres_health = _state(
        engine, _containers(engine, project, "postgres")[0], ".State.Health.Status"
    )
    assert postgres_health == "healthy"

    for app in APPS:
        (container,) = _containers(engine, project, app)
        _wait_healthy(engine, container)
    served = time.monotonic() - began

    account = {"email": "ada@example.com", "password": "correct horse 1"}
    for app, port in (("my_api", env["MY_API_PORT"]), ("bibikos_api", env["BIBIKOS_API_PORT"])):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get("/health/ready").status_code == 200, app
            registered = client.post("/auth/register", json=account)
            assert registered.status_code == 201, (app, registered.text)
            login = client.post("/auth/login", json=account)
            assert login.status_code == 200, (app, login.text)
            token = login.json()["access_token"]
            me = client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200, (app, me.text)
            assert me.json()["email"] == account["email"]

    again = compose("run", "--rm", "migrate")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("nothing to do") == 4, again.stdout  # both dbs, both registries

    down = compose("down", "-v", "--remove-orphans", timeout=120)
    assert down.returncode == 0, down.stderr
    assert _left_behind(engine, project) == []
    print(f"stack: migrated and both apps healthy in {served:.1f} s")


def test_a_failing_migration_stops_the_stack_before_the_apps(
    engine: Engine, stack: tuple[Compose, dict[str, str], str], tmp_path: Path
) -> None:
    compose, _env, project = stack
    override = tmp_path / "failing-migration.yml"
    override.write_text(
        "services:\n"
        "  migrate:\n"
        "    environment:\n"
        "      DATABASE_URL: postgresql://app:${POSTGRES_PASSWORD}@postgres:5432/no_such_database\n"
    )
    up = compose("up", "-d", "--no-build", files=(override,))
    assert up.returncode != 0, up.stdout + up.stderr
    (migrate,) = _containers(engine, project, "migrate")
    assert _state(engine, migrate, ".State.ExitCode") == "1"
    logs = engine.run("logs", migrate)
    assert 'error: core: database "no_such_database" does not exist' in logs.stderr, logs
    for app in APPS:
        for container in _containers(engine, project, app):  # compose v2 creates, never starts
            assert _state(engine, container, ".State.StartedAt").startswith("0001-01-01"), app
    compose("down", "-v", "--remove-orphans", timeout=120, files=(override,))
    assert _left_behind(engine, project) == []
