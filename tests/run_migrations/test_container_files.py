"""run_migrations' Dockerfile, compose file and .env.example, checked by parsing them.

What the container does is tested in test_entrypoint.py, and the image is built and run
for real in tests/containers/ (with a Docker engine); this checks, without one, that the
files wire it up that way (build context, env_file, command, two stages with a frozen uv
sync in the first, a non-root user and the entrypoint in the last) and that .env.example
documents every variable the entrypoint reads without carrying a real secret.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

import bibikos_db
import core_db
from db_kit.settings import PLACEHOLDER_PASSWORDS
from db_tools.remote import RemoteSettings

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "run_migrations"


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = (FOLDER / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def dotenv() -> dict[str, str]:
    values = {}
    for line in (FOLDER / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("'")
    return values


# compose -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service() -> dict[str, object]:
    compose = yaml.safe_load((FOLDER / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"migrate"}
    migrate: dict[str, object] = compose["services"]["migrate"]
    return migrate


def test_compose_builds_from_the_repository_root(service: dict[str, object]) -> None:
    build = service["build"]
    assert isinstance(build, dict)
    assert (FOLDER / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == FOLDER / "Dockerfile"


def test_compose_reads_the_env_file_and_runs_once(service: dict[str, object]) -> None:
    assert service["env_file"] in (".env", [".env"])
    assert service["restart"] == "no"  # a migration that failed must not loop
    assert "ports" not in service  # it serves nothing


def test_compose_command_chooses_the_databases(service: dict[str, object]) -> None:
    command = service["command"]
    assert isinstance(command, list)
    assert len(command) == 1
    # Compose interpolates ${MIGRATE_DATABASES:-default} from the same .env.
    match = re.fullmatch(r"\$\{MIGRATE_DATABASES:-([a-z_,]+)\}", command[0])
    assert match, command
    assert match.group(1).split(",") == ["core", "bibikos"]
    assert dotenv()["MIGRATE_DATABASES"] == "core,bibikos"


# Dockerfile ----------------------------------------------------------------------------


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    last_from = max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM")
    return instructions[last_from:]


def test_dockerfile_two_stages_on_the_official_base() -> None:
    froms = [args for ins, args in dockerfile() if ins == "FROM"]
    # The ordinary name: where no registry answers, the tests build a stand-in with it.
    assert froms == ["python:3.11-slim AS build", "python:3.11-slim"]


def test_dockerfile_frozen_uv_sync_in_the_build_stage() -> None:
    runs = [args for ins, args in dockerfile() if ins == "RUN"]
    syncs = [r[r.index("uv sync") :] for r in runs if "uv sync" in r]
    assert len(syncs) == 2, "dependencies layer, then the workspace code"
    for sync in syncs:
        words = shlex.split(sync)
        assert "--frozen" in words  # the lock as is, never re-resolved
        assert "--no-dev" in words
        packages = {words[i + 1] for i, w in enumerate(words) if w == "--package"}
        # db-tools: the entrypoint is db_tools.remote (the db libs do not depend on it).
        assert packages == {"db-tools", "core-db", "bibikos-db"}
    assert "--no-install-workspace" in syncs[0]
    assert "--no-editable" in syncs[1]  # wheels: the final stage needs no source tree


def test_dockerfile_final_stage_installs_nothing() -> None:
    final = final_stage()
    for ins, args in final:
        if ins == "RUN":
            assert "pip install" not in args, args
            assert "uv " not in args, args
    copies = [args for ins, args in final if ins == "COPY"]
    assert "--from=build /app/.venv /app/.venv" in copies


def test_dockerfile_ca_bundle_is_a_build_secret() -> None:
    """pip and uv trust the host's CA bundle through a secret mount, never a COPY."""
    text = (FOLDER / "Dockerfile").read_text()
    networked = [args for ins, args in dockerfile() if ins == "RUN" and "install" in args]
    networked += [args for ins, args in dockerfile() if ins == "RUN" and "uv sync" in args]
    for run in networked:
        assert run.startswith("--mount=type=secret,id=ca_bundle"), run
    assert "COPY" not in "".join(line for line in text.splitlines() if "ca_bundle" in line)


def test_dockerfile_copies_the_lock_before_the_code() -> None:
    copies = [args for ins, args in dockerfile() if ins == "COPY"]
    lock = next(i for i, c in enumerate(copies) if "uv.lock" in c.split())
    code = next(i for i, c in enumerate(copies) if c.startswith("libs/"))
    assert lock < code
    for copied in copies:
        if copied.startswith("--from="):
            continue
        for source in copied.split()[:-1]:
            assert (ROOT / source).exists(), f"COPY source {source} is missing"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    final = final_stage()
    users = [args for ins, args in final if ins == "USER"]
    assert users, "no USER instruction in the final stage: the container would run as root"
    assert users[-1] not in {"root", "0", "0:0"}
    last_user = max(i for i, (ins, _) in enumerate(final) if ins == "USER")
    entry = max(i for i, (ins, _) in enumerate(final) if ins == "ENTRYPOINT")
    assert last_user < entry
    assert any(users[-1] in args for ins, args in final if ins == "RUN")  # created


def test_dockerfile_entrypoint_is_the_migration_script() -> None:
    entrypoints = [args for ins, args in dockerfile() if ins == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    command = json.loads(entrypoints[0])  # exec form: signals reach Python
    assert command[0] == "python"
    assert command[1].endswith("run_migrations/entrypoint.py")
    assert (FOLDER / "entrypoint.py").exists()
    env = " ".join(args for ins, args in final_stage() if ins == "ENV")
    assert "ENVIRONMENT=production" in env


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    """BuildKit's Dockerfile.dockerignore: everything out, then only what is copied."""
    patterns = [
        line.strip()
        for line in (FOLDER / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    assert allowed == {"pyproject.toml", "uv.lock", "libs/", "run_migrations/entrypoint.py"}
    for pattern in ("**/.env", "**/.venv", "**/tests"):
        assert pattern in patterns  # also inside what is let back in


# .env.example ----------------------------------------------------------------------------


def test_env_example_documents_every_variable() -> None:
    values = dotenv()
    needed = {
        core_db.CONFIG.settings_class.url_variable,
        bibikos_db.CONFIG.settings_class.url_variable,
        "BIBIKOS_TENANT_URLS",
        "ENVIRONMENT",
        *(
            f"MIGRATE_{name.upper()}"
            for name in RemoteSettings.model_fields
            if name != "environment"
        ),
    }
    assert needed <= set(values), needed - set(values)
    assert values["ENVIRONMENT"] == "production"
    RemoteSettings(
        databases=values["MIGRATE_DATABASES"],
        wait_timeout=float(values["MIGRATE_WAIT_TIMEOUT"]),
        tenant_workers=int(values["MIGRATE_TENANT_WORKERS"]),
    )
    assert json.loads(values["BIBIKOS_TENANT_URLS"]) == {}
    assert values["CORE_DB_PGBOUNCER"] == values["BIBIKOS_DB_PGBOUNCER"] == "false"


def test_env_example_has_placeholders_only() -> None:
    """Its passwords are ones production refuses, so an unedited copy fails clearly."""
    text = (FOLDER / ".env.example").read_text()
    urls = re.findall(r"postgresql://[^\s\"']+", text)
    assert urls
    for url in urls:
        parsed = make_url(url)
        assert parsed.password in PLACEHOLDER_PASSWORDS, url
        assert str(parsed.host).endswith("example.com"), url
