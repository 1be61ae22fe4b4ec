"""The ``db`` command: one sub-command group per database library.

Database libraries register a ``DatabaseConfig`` under the ``db_kit.databases`` entry-point
group (``db_tools.discovery``), so a new database appears here (and in the Makefile's
pattern rules) with no edit; ``db new NAME`` writes such a library (``db_tools.scaffold``).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from db_tools.cli.common import handle_errors
from db_tools.cli.database import database_app
from db_tools.cli.new import new_database
from db_tools.discovery import discover

__all__ = ["build_app", "database_app", "main"]


def build_app() -> typer.Typer:
    app = typer.Typer(
        help="Database commands of this workspace: one group per database library.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    databases = discover()
    for name, db in databases.items():
        app.add_typer(database_app(db), name=name)

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
        new_database(name, modules, sync=sync)

    @app.command("list")
    def list_databases() -> None:
        """The databases this workspace knows."""
        for name, db in databases.items():
            # Plain tab-separated lines: the Makefile reads the first column.
            typer.echo(f"{name}\t{db.settings_class.url_variable}\t{db.description}")

    return app


def main() -> None:
    app = build_app()
    sys.exit(app())
