"""The migration image and one image per app, built for real with BuildKit.

Each is multi-stage: the final stage holds Python, the virtual environment (workspace
packages installed as wheels) and, for the migrations, the entrypoint; no pip, uv, compiler,
source tree or CA bundle, and it runs as a non-root user. The build stage saw only what
the Dockerfile's own ``.dockerignore`` lets through (no .git, tests or .env).
"""

from __future__ import annotations

import json
import uuid

import pytest

from db_tools.containers import IMAGES, Engine, build_image

pytestmark = [pytest.mark.slow, pytest.mark.containers, pytest.mark.timeout(1200)]

IMAGE_IDS = [image.tag.split("/")[-1].split(":")[0] for image in IMAGES]
# What the build stage's /src may hold: the Dockerfile.dockerignore allow-lists.
BUILD_CONTEXTS = {
    "run_migrations/Dockerfile": {"pyproject.toml", "uv.lock", "libs"},
    "apps/my_api/Dockerfile": {"pyproject.toml", "uv.lock", "libs", "apps"},
    "apps/bibikos_api/Dockerfile": {"pyproject.toml", "uv.lock", "libs", "apps"},
}


def _shell(engine: Engine, image: str, script: str) -> str:
    result = engine.run(
        "run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", script
    )
    return result.stdout


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_final_stage_holds_the_environment_and_no_build_tools(
    engine: Engine, images: dict[str, str], image: object
) -> None:
    tag = image.tag  # type: ignore[attr-defined]
    out = _shell(
        engine,
        tag,
        "id -u; ls -A /app | tr '\\n' ' '; echo; "
        "for t in pip pip3 uv gcc cc make; do command -v $t || true; done; "
        "python -c 'import pip' 2>/dev/null && echo pip-importable; "
        "test -e /src && echo has-src; test -e /run/secrets/ca_bundle && echo has-ca; "
        "find / -xdev -name ca_bundle 2>/dev/null; "
        "python -c 'import sys; print(sys.prefix)'",
    )
    uid, app_folder, *rest = out.splitlines()
    assert uid != "0", "runs as root"
    expected = {".venv", "run_migrations"} if "migrate" in tag else {".venv"}
    assert set(app_folder.split()) == expected
    assert rest == ["/app/.venv"], f"build tools or leftovers in the final stage: {rest}"


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_image_configuration(engine: Engine, images: dict[str, str], image: object) -> None:
    tag = image.tag  # type: ignore[attr-defined]
    config = json.loads(engine.run("image", "inspect", "--format", "{{json .Config}}", tag).stdout)
    assert config["User"] not in ("", "root", "0")
    assert "ENVIRONMENT=production" in config["Env"]
    if "migrate" in tag:
        assert config["Entrypoint"] == ["python", "/app/run_migrations/entrypoint.py"]
        assert not config.get("Healthcheck")
    else:
        app = "my_api" if "my-api" in tag else "bibikos_api"
        assert config["Cmd"][:3] == ["uvicorn", f"{app}.main:create_app", "--factory"]
        assert "/health/live" in " ".join(config["Healthcheck"]["Test"])


@pytest.mark.parametrize("dockerfile", sorted(BUILD_CONTEXTS))
def test_build_stage_sees_only_what_its_dockerignore_allows(
    engine: Engine, images: dict[str, str], dockerfile: str
) -> None:
    tag = f"data-layer/build-stage-check:{uuid.uuid4().hex[:8]}"
    build_image(engine, dockerfile, tag, target="build")  # cached: the layers exist
    try:
        out = _shell(
            engine,
            tag,
            "ls -A /src | tr '\\n' ' '; echo; "
            "find /src \\( -name tests -o -name .git -o -name .env -o -name .venv "
            "-o -name '*.pyc' -o -name .data -o -name bench \\) -print",
        )
    finally:
        engine.run("rmi", tag, check=False)
    top, *leaked = out.splitlines()
    assert set(top.split()) == BUILD_CONTEXTS[dockerfile]
    assert leaked == []


def test_the_migration_image_runs_its_entrypoint(engine: Engine, images: dict[str, str]) -> None:
    """No URL given: one error line naming the variable, exit 1 (no embedded server here)."""
    result = engine.run(
        "run", "--rm", "--network", "none", "data-layer/migrate:latest", "core", check=False
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "DATABASE_URL" in result.stdout + result.stderr


def test_images_are_smaller_than_the_single_stage_one(
    engine: Engine, images: dict[str, str]
) -> None:
    for image in IMAGES:
        size = engine.image_size(image.tag)
        # The single-stage migration image was 542 MB on the official base.
        assert size < 400e6, f"{image.tag} is {size / 1e6:.0f} MB"
