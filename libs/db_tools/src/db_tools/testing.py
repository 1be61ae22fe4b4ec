"""pytest plugin: a real PostgreSQL for every test run, never the development databases.

Server, in order of preference:

1. ``TEST_DATABASE_URL`` (any PostgreSQL the tests may create databases on);
2. testcontainers, when a Docker engine answers (image ``DB_TEST_POSTGRES_IMAGE``, default
   ``postgres:17``; ``DB_TEST_NO_DOCKER=1`` skips this);
3. the embedded PostgreSQL wheel, in a temporary folder, stopped when the run ends.

Each run creates its own databases on that server; at start (before test modules are
imported) every installed database library's URL variable is pointed at a run-specific
database so nothing falls through to ``.data/`` or to a URL in ``.env``, and
``ENVIRONMENT`` is ``test`` unless set (settings default to production).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from db_kit.settings import DRIVER
from db_tools.watchdog import after_exit


@dataclass
class PostgresServer:
    """The server a test run uses and how it was obtained."""

    admin_url: URL
    source: str
    created: list[str] = field(default_factory=list)

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        u = self.admin_url
        return psycopg.connect(
            host=u.host, port=u.port, user=u.username, password=u.password,
            dbname=u.database or "postgres", autocommit=True, connect_timeout=10,
        )  # fmt: skip

    def create_database(self, prefix: str = "t") -> URL:
        """A new empty database on this server; dropped when the run ends."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}".lower()
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        return self.admin_url.set(database=name)

    def drop_database(self, url: URL | str) -> None:
        name = make_url(url).database or ""
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        with contextlib.suppress(ValueError):
            self.created.remove(name or "")

    def drop_all(self) -> None:
        for name in list(self.created):
            with contextlib.suppress(psycopg.Error):
                self.drop_database(self.admin_url.set(database=name))


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


# The image of the testcontainers branch; a stand-in built from Debian packages carries this
# name where no registry answers (db_tools.containers).
DEFAULT_POSTGRES_IMAGE = "postgres:17"


def _ryuk_usable(client: Any, image: str) -> bool:
    """Whether Ryuk (testcontainers' reaper) can start: its image is here or can be pulled."""
    for attempt in (client.images.get, client.images.pull):
        # Not here, or no registry: try the next way, then give up.
        with contextlib.suppress(Exception):
            attempt(image)
            return True
    return False


def _reachable(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False


def _container_watchdog(pid: int, container_id: str) -> None:
    """Remove the test container when the pytest process ends, however it ends (Ryuk's job,
    when Ryuk is off)."""
    docker = shutil.which("docker") or "docker"
    after_exit(pid, f"{docker} rm -f -v {container_id} >/dev/null 2>&1")


@contextlib.contextmanager
def _postgres_container() -> Iterator[PostgresServer]:
    """PostgreSQL in a container (testcontainers), ``DB_TEST_POSTGRES_IMAGE`` or postgres:17.

    Ryuk is turned off when its image is neither here nor pullable (the container is then
    removed by this context and by a watchdog if pytest dies). The server is reached at
    127.0.0.1 on its published port when that answers (an engine on this machine, even
    when the machine is itself a container, where testcontainers would choose a gateway
    address); otherwise at the host testcontainers works out (Docker-out-of-Docker, remote).
    """
    import docker
    from testcontainers.core.config import testcontainers_config

    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers before 4.14
        from testcontainers.postgres import PostgresContainer

    image = os.environ.get("DB_TEST_POSTGRES_IMAGE") or DEFAULT_POSTGRES_IMAGE
    notes = [image]
    if not testcontainers_config.ryuk_disabled and not _ryuk_usable(
        docker.from_env(timeout=30), testcontainers_config.ryuk_image
    ):
        testcontainers_config.ryuk_disabled = True
        notes.append("Ryuk off: its image cannot be pulled")
    container = PostgresContainer(
        image, username="test", password=uuid.uuid4().hex, dbname="postgres", driver="psycopg"
    )
    with container:
        _container_watchdog(os.getpid(), container.get_wrapped_container().id)
        published = int(container.get_docker_client().port(container.get_container_id(), 5432))
        if _reachable("127.0.0.1", published):
            host, port = "127.0.0.1", published
        else:
            host, port = container.get_container_host_ip(), container.get_exposed_port(5432)
        url = URL.create(
            DRIVER,
            username=container.username,
            password=container.password,
            host=host,
            port=port,
            database="postgres",
        )
        yield PostgresServer(url, f"testcontainers ({', '.join(notes)}) at {host}:{port}")


def _watchdog(pid: int, pgdata: Path, pg_ctl: Path, user: str | None) -> None:
    """Stop the test server when the pytest process ends, however it ends."""
    stop = f"{pg_ctl} -D {pgdata} -m immediate stop"
    if user:
        stop = f"su -s /bin/sh {user} -c '{stop}'"
    after_exit(pid, f"{stop} >/dev/null 2>&1; rm -rf '{pgdata.parent}'")


@contextlib.contextmanager
def start_server(tmp_dir: Path) -> Iterator[PostgresServer]:
    """Yield a PostgreSQL server following the order of preference above."""
    env_url = os.environ.get("TEST_DATABASE_URL")
    if env_url:
        url = make_url(env_url).set(drivername=DRIVER)
        yield PostgresServer(url, "TEST_DATABASE_URL")
        return
    if os.environ.get("DB_TEST_NO_DOCKER") != "1" and _docker_answers():
        with _postgres_container() as in_container:
            yield in_container
        return
    from db_tools.embedded import SYSTEM_USER, EmbeddedPostgres, bin_dir

    server = EmbeddedPostgres(tmp_dir)
    server.start()
    _watchdog(
        os.getpid(),
        server.pgdata,
        bin_dir() / "pg_ctl",
        SYSTEM_USER if os.geteuid() == 0 else None,
    )
    try:
        yield PostgresServer(make_url(server.url("postgres")), f"embedded ({tmp_dir})")
    finally:
        server.destroy()


def _installed_databases() -> dict[str, object]:
    try:
        from db_tools.discovery import discover
    except Exception:
        return {}
    return dict(discover())


# The run's server and what undoes the run's changes (started once, before collection).
_RUN: dict[str, Any] = {}


def _run_server() -> PostgresServer:
    """The run's server, started on first use and stopped when the run ends."""
    if "server" not in _RUN:
        stack = _RUN.setdefault("stack", contextlib.ExitStack())
        # Not under pytest's basetemp: a concurrent pytest run prunes old basetemps, which
        # would delete a live cluster's files.
        data_dir = Path(tempfile.mkdtemp(prefix="db_kit_test_pg_"))
        stack.callback(shutil.rmtree, data_dir, ignore_errors=True)
        started = stack.enter_context(start_server(data_dir))
        stack.callback(started.drop_all)
        _RUN["server"] = started
    server: PostgresServer = _RUN["server"]
    return server


def _choose_test_environment() -> None:
    # Settings default to production (a URL required, no embedded server): the tests'
    # own processes and the subprocesses they spawn run as ENVIRONMENT=test unless told.
    os.environ.setdefault("ENVIRONMENT", "test")


def pytest_load_initial_conftests() -> None:
    _choose_test_environment()


def pytest_configure(config: pytest.Config) -> None:
    _choose_test_environment()


def pytest_report_header(config: pytest.Config) -> str | None:
    """Which server the run uses (the embedded one, testcontainers, TEST_DATABASE_URL)."""
    server: PostgresServer | None = _RUN.get("server")
    return f"postgresql: {server.source}" if server is not None else None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Point every db lib at a run-specific database before test modules are imported
    (an app module loads its settings at import, and outside development a missing URL
    is an error); never the development databases or a URL from ``.env``."""
    configs = _installed_databases()
    if not configs or "saved" in _RUN:
        return
    server = _run_server()
    saved: dict[str, str | None] = {}
    for name, config in configs.items():
        variable = config.settings_class.url_variable  # type: ignore[attr-defined]
        saved[variable] = os.environ.get(variable)
        os.environ[variable] = server.create_database(f"run_{name}").render_as_string(
            hide_password=False
        )
        config.reset()  # type: ignore[attr-defined]
    _RUN["saved"] = saved


def pytest_unconfigure(config: pytest.Config) -> None:
    stack: contextlib.ExitStack | None = _RUN.pop("stack", None)
    if stack is None:
        return
    with contextlib.suppress(Exception):
        reset_engines()
    for variable, value in _RUN.pop("saved", {}).items():
        if value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = value
    _RUN.clear()
    stack.close()


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """The run's PostgreSQL server (see module docstring for how it is chosen)."""
    return _run_server()


def unused_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound once, then released): connections to it
    are refused at once, the quickest "server down" there is."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def closed_port() -> int:
    """``unused_port()`` as a fixture."""
    return unused_port()


def reset_engines() -> int:
    """Dispose every database's engines and forget cached settings (between tests).

    Async connections are closed on a short-lived event loop when none is running, so no
    "connection deleted while still open" warning follows a test. Returns how many
    databases were disposed; each builds its engines again on next use.
    """
    from db_kit.database import dispose_all, dispose_all_sync

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        count = asyncio.run(dispose_all())
    else:
        count = dispose_all_sync()
    for config in _installed_databases().values():
        config.reset()  # type: ignore[attr-defined]
    return count


@pytest.fixture
def fresh_engines() -> Iterator[None]:
    """Use in a test (or autouse in a conftest) to start and end it with no engine cached."""
    reset_engines()
    yield
    reset_engines()


@pytest.fixture
def fresh_database(postgres_server: PostgresServer) -> Iterator[Callable[..., URL]]:
    """Factory of empty databases, dropped after the test."""
    made: list[URL] = []

    def make(prefix: str = "t") -> URL:
        url = postgres_server.create_database(prefix)
        made.append(url)
        return url

    yield make
    for url in made:
        with contextlib.suppress(psycopg.Error):
            postgres_server.drop_database(url)


def url_string(url: URL) -> str:
    """The URL with its password, for environment variables of subprocesses."""
    return url.render_as_string(hide_password=False)


@pytest.fixture
def database_at_head(
    fresh_database: Callable[..., URL],
) -> Callable[..., URL]:
    """Factory: a fresh database migrated to head for a ``DatabaseConfig``."""
    from db_kit.config import DatabaseConfig
    from db_kit.migrations.migrator import Migrator

    def make(config: DatabaseConfig) -> URL:
        url = fresh_database(config.name)
        Migrator(config, url).upgrade("head")
        return url

    return make


def alembic_test_fixtures(config: object) -> tuple[object, object]:
    """``alembic_config`` and ``alembic_engine`` for pytest-alembic on a fresh database.

    In a test module: ``alembic_config, alembic_engine = alembic_test_fixtures(CONFIG)``.
    """
    from sqlalchemy import create_engine

    from db_kit.config import DatabaseConfig
    from db_kit.migrations.migrator import Migrator

    assert isinstance(config, DatabaseConfig)

    @pytest.fixture
    def alembic_config(fresh_database: Callable[..., URL]) -> object:
        url = fresh_database(config.name.replace(" ", "_"))
        cfg = Migrator(config, url).alembic_config()
        cfg.attributes["test_url"] = url
        return cfg

    @pytest.fixture
    def alembic_engine(alembic_config: object) -> Iterator[object]:
        engine = create_engine(alembic_config.attributes["test_url"])  # type: ignore[attr-defined]
        yield engine
        engine.dispose()

    return alembic_config, alembic_engine


def run_sql(url: URL, statement: str, **params: object) -> list[tuple[Any, ...]]:
    """Run one statement in its own transaction on a pool-less engine; return its rows.

    For assertions on what a test's code left in the database.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool, hide_parameters=True)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


APT_INSTALL_TIMEOUT = 300  # seconds for apt-get update + install on a fresh machine


def debian_program(package: str, *names: str, timeout: float = APT_INSTALL_TIMEOUT) -> str:
    """The path of a program from Debian ``package``, installing it as root when missing.

    ``names`` are the program names or absolute paths to look for (default: the package
    name). Skips the calling test with the reason when it is absent and cannot be
    installed here (not root, no apt-get, apt failed or took longer than ``timeout``).
    """
    candidates = names or (package,)

    def found() -> str | None:
        for name in candidates:
            path = shutil.which(name) if not name.startswith("/") else name
            if path and Path(path).is_file():
                return path
        return None

    present = found()
    if present:
        return present
    if os.geteuid() != 0:
        pytest.skip(f"{package} is not installed, and installing it (apt-get) needs root")
    if shutil.which("apt-get") is None:
        pytest.skip(f"{package} is not installed and this machine has no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = "-o DPkg::Lock::Timeout=60"
    try:
        subprocess.run(
            [
                "/bin/sh",
                "-c",
                f"apt-get update -qq {lock} && "
                f"apt-get install -y -qq --no-install-recommends {lock} {package}",
            ],
            check=True,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env=env,
            timeout=timeout,
        )
    except subprocess.CalledProcessError as exc:
        tail = "\n".join((exc.stderr or exc.stdout or "").strip().splitlines()[-5:])
        pytest.skip(f"{package} is not installed and `apt-get install {package}` failed:\n{tail}")
    except subprocess.TimeoutExpired:
        pytest.skip(f"{package} is not installed and apt-get took over {timeout:.0f} s")
    present = found()
    if present is None:
        pytest.skip(f"apt-get installed {package}, yet none of {', '.join(candidates)} exists")
    return present
