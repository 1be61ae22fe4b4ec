"""What every ``db`` command shares: consoles, the one-line error handler, and giving a
database command its development server."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from alembic.util import CommandError
from rich.console import Console
from rich.markup import escape

from db_kit.config import DatabaseConfig
from db_shared.errors import DatabaseError
from db_tools.dev import provide_url

VERIFY_HELP = (
    "Read every tenant's version table instead of trusting registry rows at head "
    "(after restoring a schema from a backup or running Alembic by hand)."
)
F = TypeVar("F", bound=Callable[..., Any])

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False)


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(1)


def handle_errors(fn: F) -> F:
    """Turn db_shared errors into one red line and exit code 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DatabaseError as exc:
            _fail(str(exc))
        except CommandError as exc:
            hint = ""
            if "not up to date" in str(exc):
                hint = " Apply the pending revisions first (`db NAME migrate`), then generate."
            _fail(f"{str(exc).rstrip('.')}.{hint}")
        except Exception as exc:
            from sqlalchemy.exc import DBAPIError

            from db_kit.errors import translate

            mapped = translate(exc)
            if mapped is not None:
                _fail(str(mapped))
            if isinstance(exc, DBAPIError):
                # A revision or statement failed: its transaction was rolled back.
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                from db_kit.errors import sqlstate
                from db_kit.migrations.locks import LOCK_NOT_AVAILABLE

                if sqlstate(exc) == LOCK_NOT_AVAILABLE:
                    reason += (
                        " (another session holds a lock this command needs; find it in "
                        "pg_stat_activity, or raise <PREFIX>MIGRATION_LOCK_TIMEOUT_MS)"
                    )
                _fail(f"{reason}. The failed transaction was rolled back; nothing of it remains.")
            raise

    return wrapper  # type: ignore[return-value]


def _revs(revs: tuple[str, ...]) -> str:
    return ", ".join(revs) if revs else "(empty database)"


def with_database(app: typer.Typer, db: DatabaseConfig) -> typer.Typer:
    """Every command of ``app`` first gets ``db`` its development server when it needs one
    (``ENVIRONMENT=development`` and no URL: ``db_tools.dev.provide_url``)."""
    for info in app.registered_commands:
        callback = info.callback
        if callback is None:
            continue

        def wrapped(*args: Any, __callback: Callable[..., Any] = callback, **kwargs: Any) -> Any:
            provide_url(db)
            return __callback(*args, **kwargs)

        info.callback = handle_errors(functools.wraps(callback)(wrapped))
    return app
