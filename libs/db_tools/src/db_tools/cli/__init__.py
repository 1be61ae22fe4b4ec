"""The ``db`` command: one sub-command group per database library.

Database libraries register a ``DatabaseConfig`` under the ``db_kit.databases`` entry-point
group (``db_tools.discovery``), so a new database appears here (and in the Makefile's
pattern rules) with no edit; ``db new NAME`` writes such a library (``db_tools.scaffold``).

Start-up stays light: ``db --help`` lists each database from its config's source (name and
description) without importing it, and a database's group (its config, SQLAlchemy,
Alembic, the toolkit) is built only when a command names it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup
from typer.main import get_group_from_info
from typer.models import TyperInfo

from db_tools.cli.common import (
    VERIFY_HELP,
    console,
    err_console,
    fail,
    handle_errors,
    revisions,
    with_database,
)
from db_tools.discovery import Listing, listings

if TYPE_CHECKING:
    from db_kit.config import DatabaseConfig

__all__ = [
    "VERIFY_HELP",
    "build_app",
    "console",
    "database_app",
    "err_console",
    "fail",
    "handle_errors",
    "main",
    "revisions",
    "versions",
    "with_database",
]


def database_app(db: DatabaseConfig) -> typer.Typer:
    """The sub-commands of one database (``db_tools.cli.database.database_app``)."""
    from db_tools.cli.database import database_app as build

    return build(db)


def _database_group(db: DatabaseConfig) -> TyperGroup:
    """The group ``db NAME`` runs, built as ``add_typer(database_app(db), name=NAME)`` would."""
    app = database_app(db)
    return get_group_from_info(
        TyperInfo(app, name=db.name),
        pretty_exceptions_short=app.pretty_exceptions_short,
        rich_markup_mode=app.rich_markup_mode,
        suggest_commands=app.suggest_commands,
    )


class _PendingDatabase(TyperGroup):
    """A database group as ``db --help`` lists it; built for real when a command names it."""

    def __init__(self, listing: Listing) -> None:
        super().__init__(
            name=listing.name,
            help=listing.description or f"Migrations and data of the {listing.name} database.",
        )
        self.listing = listing

    def build(self) -> TyperGroup | None:
        from db_tools.discovery import load

        config = load(self.listing.entry_point)
        if config is None or config.name != self.listing.name:
            return None
        return _database_group(config)


class _DatabasesGroup(TyperGroup):
    """The top-level group: ``new``, ``list`` and one lazily built group per database."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        read, unread = listings()
        found: dict[str, TyperGroup] = {name: _PendingDatabase(read[name]) for name in read}
        if unread:  # configs whose name or description is not a literal: load them
            from db_tools.discovery import load

            for ep in unread:
                config = load(ep)
                if config is not None:
                    found[config.name] = _database_group(config)
        for name in sorted(found):
            self.commands.setdefault(name, found[name])

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        pending = self.commands.get(args[0]) if args else None
        if isinstance(pending, _PendingDatabase):
            built = pending.build()
            if built is None:
                del self.commands[args[0]]
            else:
                self.commands[args[0]] = built
        return super().resolve_command(ctx, args)


def versions() -> list[str]:
    """``db --version``: db-tools, the toolkit it drives, and each installed database library
    (read from package metadata: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    from db_tools.discovery import database_entry_points

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    lines = [f"db-tools {of('db-tools')}"]
    lines.append(
        "  " + ", ".join(f"{d} {of(d)}" for d in ("db-kit", "db-shared", "alembic", "sqlalchemy"))
    )
    for ep in sorted(database_entry_points(), key=lambda e: e.name):
        dist = ep.dist
        shipped = f"{dist.name} {dist.version}" if dist is not None else ep.value
        lines.append(f"  {ep.name}: {shipped}")
    return lines


def _print_version(value: bool) -> None:
    if value:
        typer.echo("\n".join(versions()))
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        cls=_DatabasesGroup,
        help="Database commands of this workspace: one group per database library.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def root(
        version: Annotated[
            bool,
            typer.Option(
                "--version",
                is_eager=True,
                callback=_print_version,
                help="Show the db-tools version and the installed database libraries.",
            ),
        ] = False,
    ) -> None:
        """Database commands of this workspace: one group per database library."""

    @app.command("new")
    @handle_errors
    def new(
        name: Annotated[
            str, typer.Argument(help="lower_snake_case, e.g. shop: creates libs/shop_db.")
        ],
        modules: Annotated[
            str | None,
            typer.Option(
                help="Shared modules to compose, comma-separated (default: all; 'none').",
                show_default=False,
            ),
        ] = None,
        sync: Annotated[
            bool,
            typer.Option(help="Run `uv lock` and `uv sync --all-packages` afterwards."),
        ] = True,
    ) -> None:
        """Scaffold a new database library with its initial revision, ready for `db NAME ...`."""
        from db_tools.cli.new import new_database

        new_database(name, modules, sync=sync)

    @app.command("list")
    def list_databases() -> None:
        """The databases this workspace knows."""
        from db_tools.discovery import discover

        for name, db in discover().items():
            # Plain tab-separated lines: the Makefile reads the first column.
            typer.echo(f"{name}\t{db.settings_class.url_variable}\t{db.description}")

    return app


def main() -> None:
    app: Callable[[], Any] = build_app()
    sys.exit(app())
