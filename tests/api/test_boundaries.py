"""The web layer's boundaries (issue 10), checked on the code and on fresh interpreters.

* Feature services know no HTTP: they raise ``db_shared`` domain errors, import no
  FastAPI/Starlette, and api_kit maps the errors to statuses.
* A db lib gets only the tables: importing a feature package, its tables and its seed
  helpers loads no web stack, and each package's ``__init__`` names its public API.
* Importing an app module does nothing: no settings read, no socket, no logging set up;
  the app is built by ``create_app`` (uvicorn ``--factory``).
* No package imports another package's private (``_name``) modules or names.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL

import core_db

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ("auth", "payments", "notifications", "contact")
APPS = ("my_api", "bibikos_api")
WEB_STACK = ("fastapi", "starlette", "uvicorn", "api_kit", "svcs")
# Only what a db lib needs from a feature: the table mixins and the seed helpers.
TABLE_MODULES = [f"{f}.tables" for f in FEATURES] + ["auth.seed", "payments.seed"]
# Value types with no HTTP in them, which services may share with the routes.
SERVICE_MAY_IMPORT = frozenset({"api_kit.types", "api_kit.pagination"})
SERVICE_MODULES = sorted(
    [
        *ROOT.glob("libs/*/src/*/service.py"),
        ROOT / "apps/bibikos_api/src/bibikos_api/gym/service.py",
    ]
)
# Packages whose __init__ must name its public API and import no router or service.
OWNED_PACKAGE_INITS = sorted(
    [
        *(ROOT / "libs" / name / "src" / name / "__init__.py" for name in (*FEATURES, "api_kit")),
        *ROOT.glob("apps/*/src/**/__init__.py"),
    ]
)


def run_python(code: str, *, env: dict[str, str] | None = None, cwd: Path = ROOT) -> str:
    """Run ``code`` in a fresh interpreter of this venv; its last stdout line."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1]


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


# --- 1. services know no HTTP -------------------------------------------------------------


def test_every_service_module_is_checked() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in SERVICE_MODULES}
    assert {f"libs/{f}/src/{f}/service.py" for f in FEATURES} <= names
    assert "apps/bibikos_api/src/bibikos_api/gym/service.py" in names


@pytest.mark.parametrize("path", SERVICE_MODULES, ids=lambda p: p.parent.name)
def test_services_import_no_web_framework_and_name_no_status(path: Path) -> None:
    web = {
        module
        for module in imported_modules(path)
        if module.partition(".")[0] in {"fastapi", "starlette"}
        or (module.partition(".")[0] == "api_kit" and module not in SERVICE_MAY_IMPORT)
    }
    assert not web, f"{path.name} imports {sorted(web)}: raise db_shared domain errors instead"
    source = path.read_text(encoding="utf-8")
    for http_word in ("HTTPException", "status_code", "HTTP_", "ProblemError"):
        assert http_word not in source, f"{path.relative_to(ROOT)} mentions {http_word}"


def test_importing_the_feature_services_loads_no_web_stack() -> None:
    modules = [f"{f}.service" for f in FEATURES]
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(json.dumps([m for m in {list(WEB_STACK)!r} if m in sys.modules]))\n"
    )
    assert json.loads(run_python(code)) == []


# --- 5. tables without routers ------------------------------------------------------------


def test_importing_the_tables_and_seed_helpers_loads_no_web_stack() -> None:
    watched = [*WEB_STACK, "pydantic", "pwdlib", "standardwebhooks", "email_validator"]
    code = (
        "import importlib, json, sys\n"
        f"for name in {[*FEATURES, *TABLE_MODULES]!r}: importlib.import_module(name)\n"
        f"print(json.dumps([m for m in {watched!r} if m in sys.modules]))\n"
    )
    assert json.loads(run_python(code)) == []


def _all_names(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "__all__"
            and node.value is not None
        ):
            return list(ast.literal_eval(node.value))
    return None


@pytest.mark.parametrize("path", OWNED_PACKAGE_INITS, ids=lambda p: p.parent.name)
def test_package_init_states_its_public_names_and_imports_no_routes(path: Path) -> None:
    names = _all_names(ast.parse(path.read_text(encoding="utf-8")))
    assert names is not None, f"{path.relative_to(ROOT)} has no __all__"
    heavy = {
        module
        for module in imported_modules(path)
        if module.rpartition(".")[2] in {"router", "service", "dependencies", "webhooks", "main"}
    }
    assert not heavy, f"{path.relative_to(ROOT)} imports {sorted(heavy)} at import time"
    package = ".".join(path.relative_to(ROOT).parts[3:-1])
    code = (
        f"import json, {package} as p\n"
        f"print(json.dumps([n for n in {names!r} if not hasattr(p, n)]))\n"
    )
    assert json.loads(run_python(code)) == [], f"{package}.__all__ names missing attributes"


def _uv() -> str:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    return uv


@pytest.mark.parametrize("package", ["core-db", "bibikos-db", *FEATURES])
def test_a_db_lib_or_feature_install_carries_no_web_stack(package: str) -> None:
    result = subprocess.run(
        [_uv(), "export", "--package", package, "--no-dev", "--frozen", "--no-hashes"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    listed = {
        line.split("==")[0].strip().lower().removeprefix("-e ./libs/").replace("_", "-")
        for line in result.stdout.splitlines()
        if line and not line.lstrip().startswith("#")
    }
    web = {
        "fastapi",
        "starlette",
        "uvicorn",
        "sqladmin",
        "api-kit",
        "svcs",
        "pwdlib",
        "standardwebhooks",
        "email-validator",
    }
    assert not listed & web, f"{package} installs {sorted(listed & web)}"


def test_the_apps_install_the_feature_routes() -> None:
    result = subprocess.run(
        [_uv(), "export", "--package", "my-api", "--no-dev", "--frozen", "--no-hashes"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    for needed in ("fastapi==", "pwdlib==", "standardwebhooks==", "email-validator==", "svcs=="):
        assert needed in result.stdout, f"my-api must install {needed.rstrip('=')}"


# --- 4. importing an app does nothing; the factory builds it ------------------------------

AUDIT = """
import json, logging, sys
events = []
CODE = ('.py', '.pyc', '.so', '.pth', '.typed', '.json', '.txt', '.cfg', '.toml')
def hook(event, args):
    if event in ('socket.connect', 'socket.bind', 'subprocess.Popen', 'os.system'):
        events.append(event)
    elif event == 'open' and isinstance(args[0], str):
        name = args[0]
        # Bytecode caches are Python's own; /proc is read by prometheus_client's import
        # (its process collector), the same on every machine.
        if name.startswith(('/proc/', '/sys/')) or '/__pycache__/' in name:
            return
        if not name.endswith(CODE) and '/site-packages/' not in name and '/lib/python' not in name:
            events.append('open ' + name)
sys.addaudithook(hook)
handlers, level, factory = list(logging.root.handlers), logging.root.level, logging.getLogRecordFactory()
import {module}
print(json.dumps({{
    'events': events,
    'logging_changed': (list(logging.root.handlers), logging.root.level,
                        logging.getLogRecordFactory()) != (handlers, level, factory),
    'has_app': hasattr({module}, 'app'),
}}))
"""


def bare_env(home: Path) -> dict[str, str]:
    """What a container gives an installed app: no ENVIRONMENT, no URL, no workspace root."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(home)}


@pytest.mark.parametrize("app", APPS)
def test_importing_an_app_module_reads_nothing_and_opens_nothing(app: str, tmp_path: Path) -> None:
    # A .env that would make a settings read fail loudly if anything read it at import.
    (tmp_path / ".env").write_text("DATABASE_URL=not a url\nBIBIKOS_DATABASE_URL=not a url\n")
    report = json.loads(
        run_python(AUDIT.format(module=f"{app}.main"), env=bare_env(tmp_path), cwd=tmp_path)
    )
    assert report == {"events": [], "logging_changed": False, "has_app": False}


@pytest.mark.parametrize("app", APPS)
def test_the_factory_refuses_to_build_without_a_url_outside_development(
    app: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"from {app}.main import create_app; create_app()"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env=bare_env(tmp_path),
    )
    assert result.returncode != 0
    variable = "BIBIKOS_DATABASE_URL" if app == "bibikos_api" else "DATABASE_URL"
    assert f"{variable} is not set" in result.stderr, result.stderr


def test_uvicorn_serves_my_api_through_its_factory(
    database_at_head: Callable[..., URL], tmp_path: Path
) -> None:
    """The Makefile's command: ``uvicorn my_api.main:create_app --factory``."""
    url = database_at_head(core_db.CONFIG).render_as_string(hide_password=False)
    env = {**os.environ, "DATABASE_URL": url, "ENVIRONMENT": "test"}
    uvicorn = str(Path(sys.executable).parent / "uvicorn")
    command = [uvicorn, "my_api.main:create_app", "--factory", "--host", "127.0.0.1", "--port"]
    for _attempt in range(3):
        port = _free_port()
        server = subprocess.Popen(
            [*command, str(port)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            status = _wait_for(f"http://127.0.0.1:{port}/health/live", server)
        finally:
            server.terminate()
            try:
                _, stderr = server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                _, stderr = server.communicate()
        if status is not None or "address already in use" not in stderr:
            break
    assert status == 200, stderr


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for(url: str, server: subprocess.Popen[str]) -> int | None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            return httpx.get(url, timeout=2).status_code
        except httpx.TransportError:
            time.sleep(0.1)
    return None


# --- 7. no private names across packages --------------------------------------------------


def _workspace_packages() -> set[str]:
    return {
        p.parent.name
        for pattern in ("libs/*/src/*/__init__.py", "apps/*/src/*/__init__.py")
        for p in ROOT.glob(pattern)
    }


def _owner(path: Path) -> str | None:
    """The package a file belongs to: its own package, or the one its tests sit beside."""
    parts = path.relative_to(ROOT).parts
    if parts[0] in {"libs", "apps"} and len(parts) > 3 and parts[2] == "src":
        return parts[3]
    if parts[0] in {"libs", "apps"} and len(parts) > 2 and parts[2] == "tests":
        return parts[1]
    return None


def test_no_package_imports_another_packages_private_names() -> None:
    packages = _workspace_packages()
    files = {
        p
        for pattern in ("libs/*/src/**/*.py", "apps/*/src/**/*.py", "libs/*/tests/**/*.py")
        for p in ROOT.glob(pattern)
    } | set((ROOT / "tests").rglob("*.py"))
    problems = []
    for path in sorted(files):
        own = _owner(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                parts = name.split(".")
                private = [p for p in parts[1:] if p.startswith("_") and not p.endswith("__")]
                if parts[0] in packages - {own} and private:
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not problems, "\n".join(sorted(set(problems)))
