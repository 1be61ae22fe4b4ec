"""What every ``db`` command shares: consoles, the one-line error handler, and giving a
database command its development server."""

from __future__ import annotations

import functools
import getpass
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from db_kit.config import DatabaseConfig

# Light on purpose: `db --help` imports this module, so SQLAlchemy, Alembic and the
# toolkit are imported where an error is handled or a command runs, not here.

__all__ = [
    "EXIT_3",
    "SERVER_HELP",
    "SQL_HELP",
    "VERIFY_HELP",
    "cli_actor",
    "console",
    "err_console",
    "fail",
    "handle_errors",
    "offline",
    "print_sql",
    "revisions",
    "with_database",
]

# Every command that can exit 3 says so in its --help (scripts and CI branch on it).
EXIT_3 = "Exit codes: 0 all at head, 3 something behind (pending, drift, a tenant), 1 error."
SQL_HELP = (
    "Print the SQL to stdout instead of running it (Alembic offline mode): nothing is "
    "applied and no database is opened."
)

VERIFY_HELP = (
    "Read every tenant's version table instead of trusting registry rows at head "
    "(after restoring a schema from a backup or running Alembic by hand)."
)
SERVER_HELP = (
    "The server (a name of <PREFIX>SERVERS) to put the new tenant on. Default: the "
    "<PREFIX>PLACEMENT policy, fewest (the server holding the fewest tenants) or explicit "
    "(then required when there are several servers)."
)
F = TypeVar("F", bound=Callable[..., Any])

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False)


def fail(message: str) -> None:
    """Print ``error: message`` in red on stderr and exit with code 1."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(1)


def handle_errors(fn: F) -> F:
    """Turn db_shared errors into one red line and exit code 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            _explain(exc)
            raise

    return wrapper  # type: ignore[return-value]


def _explain(exc: Exception) -> None:
    """Exit with one line for a database, Alembic or driver error; return for anything else."""
    if isinstance(exc, typer.Exit | typer.Abort):
        return  # a command's own exit (or fail()): nothing to translate
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError

    from db_kit.errors import first_line, translate
    from db_shared.errors import DatabaseError, DomainError

    if isinstance(exc, DatabaseError):
        fail(str(exc))
    if isinstance(exc, DomainError):  # a refused operation (tenant lifecycle): its reason
        fail(exc.detail)
    if isinstance(exc, CommandError):
        fail(f"{str(exc).rstrip('.')}.")
    mapped = translate(exc)
    if mapped is not None:
        fail(str(mapped))
    if isinstance(exc, DBAPIError):
        # A revision or statement failed: its transaction was rolled back.
        reason = first_line(exc)
        from db_kit.errors import sqlstate
        from db_kit.migrations.locks import LOCK_NOT_AVAILABLE

        if sqlstate(exc) == LOCK_NOT_AVAILABLE:
            reason += (
                " (another session holds a lock this command needs; find it in "
                "pg_stat_activity, or raise <PREFIX>MIGRATION_LOCK_TIMEOUT_MS)"
            )
        fail(f"{reason}. The failed transaction was rolled back; nothing of it remains.")


def offline(fn: F) -> F:
    """Mark a command that never needs a database (no development server is started)."""
    fn.__db_offline__ = True  # type: ignore[attr-defined]
    return fn


def print_sql(script: str, note: str | None = None) -> None:
    """An offline script on stdout, untouched (for a file or psql); ``note`` on stderr."""
    typer.echo(script, nl=False)
    if note:
        err_console.print(f"-- note: {escape(note)}", soft_wrap=True)


def revisions(revs: tuple[str, ...]) -> str:
    """Revision ids for a report line, or ``(empty database)``."""
    return ", ".join(revs) if revs else "(empty database)"


def with_database(app: typer.Typer, db: DatabaseConfig) -> typer.Typer:
    """Every command of ``app`` first gets ``db`` its development server when it needs one
    (``ENVIRONMENT=development`` and no URL: ``db_tools.dev.provide_url``); offline ones
    (``offline``, or called with ``--sql``) never do."""
    for info in app.registered_commands:
        callback = info.callback
        if callback is None:
            continue

        def wrapped(*args: Any, __callback: Callable[..., Any] = callback, **kwargs: Any) -> Any:
            # Offline commands (merge, any --sql) need no server: none is started for them.
            if not (getattr(__callback, "__db_offline__", False) or kwargs.get("sql")):
                from db_tools.dev import provide_url

                provide_url(db)
            return __callback(*args, **kwargs)

        info.callback = handle_errors(functools.wraps(callback)(wrapped))
    return app


def cli_actor() -> str:
    """Who the audit records for a CLI change: the operating-system user and host."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment (e.g. a bare container uid)
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"
