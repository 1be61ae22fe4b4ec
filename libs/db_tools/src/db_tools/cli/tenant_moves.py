"""``db NAME tenants move|moves|drop-moved``: online tenant moves between the servers of a
fleet (``db_kit.tenancy.moves``), for both tenancy modes."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from db_tools.cli.common import cli_actor, console, fail

if TYPE_CHECKING:
    from db_kit.config import DatabaseConfig
    from db_kit.tenancy.moves import TenantMover

__all__ = ["add_move_commands"]

SLUG = Annotated[str, typer.Argument(help="The tenant's slug.", show_default=False)]


def _mover(db: DatabaseConfig, *, verbose: bool = False) -> TenantMover:
    from db_kit.tenancy.moves import TenantMover

    began = time.perf_counter()

    def on_phase(phase: object, _: str) -> None:
        if verbose:
            console.print(f"  {time.perf_counter() - began:7.2f} s  {phase}")

    return TenantMover(db, actor=cli_actor(), on_phase=on_phase)


def add_move_commands(app: typer.Typer, db: DatabaseConfig) -> None:
    """Add ``move``, ``moves`` and ``drop-moved`` to a ``db NAME tenants`` app."""
    name = db.name

    @app.command("move")
    def move(
        slug: SLUG,
        to: Annotated[
            str | None, typer.Option("--to", help="The server to move it to (<PREFIX>SERVERS).")
        ] = None,
        method: Annotated[
            str,
            typer.Option(
                help="logical (replication; writes paused well under a second) or dump "
                "(writes paused while every table is copied; no wal_level=logical needed)."
            ),
        ] = "logical",
        abort: Annotated[
            bool, typer.Option("--abort", help="Roll back the tenant's unfinished move.")
        ] = False,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    ) -> None:
        """Move a tenant's data to another server while it is served (or resume its
        unfinished move; or --abort it). Every phase is recorded: a move killed at any
        point resumes when run again, or is rolled back with --abort."""
        from db_kit.tenancy.moves import MoveMethod

        mover = _mover(db, verbose=True)
        if abort:
            report = mover.abort(slug)
            console.print(
                f"{name}: move #{report.move_id} of tenant {slug} rolled back in "
                f"{report.seconds:.1f} s; it is served from {report.source}."
            )
            return
        if to is None:
            fail("name the server to move to with --to SERVER (or roll back with --abort).")
            return
        if method not in {m.value for m in MoveMethod}:
            fail(f"--method must be logical or dump, not {method!r}.")
        settings = mover.settings
        if (
            settings.is_production
            and not yes
            and not typer.confirm(
                f"Move tenant {slug} of {name} to server {to} ({settings.environment_label})? "
                "Its writes pause for the cut-over"
            )
        ):
            fail("aborted; nothing changed.")
        report = mover.move(slug, to=to, method=method)
        console.print(
            f"{name}: tenant {slug} moved from {report.source} to {report.target} "
            f"({report.method}) in {report.seconds:.1f} s; writes paused {report.freeze_ms} ms."
        )
        console.print(
            f"The source copy is kept as {report.source_copy} on {report.source}; drop it "
            f"with `db {name} tenants drop-moved {slug}` once you no longer need it."
        )

    @app.command("moves")
    def moves(
        slug: Annotated[str | None, typer.Argument(help="Only this tenant's moves.")] = None,
    ) -> None:
        """Recorded tenant moves, newest first: phase, error, freeze time, kept copy."""
        table = Table(
            "#", "tenant", "from", "to", "method", "phase", "freeze ms", "kept copy", "error"
        )
        for row in _mover(db).moves(slug):
            kept = row.source_copy if row.source_copy and not row.copy_dropped_at else "-"
            table.add_row(
                str(row.id), row.tenant_slug, row.source, row.target, row.method, row.phase,
                "-" if row.freeze_ms is None else str(row.freeze_ms), kept or "-",
                (row.error or "")[:80],
            )  # fmt: skip
        console.print(table)

    @app.command("drop-moved")
    def drop_moved(
        slug: SLUG,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    ) -> None:
        """Drop the source copies kept by the tenant's finished moves (irreversible)."""
        if not yes and not typer.confirm(
            f"Drop the copies of tenant {slug} kept on the servers it moved from? "
            "This cannot be undone"
        ):
            fail("aborted; nothing changed.")
        dropped = _mover(db).drop_source_copy(slug)
        if not dropped:
            console.print(f"{name}: tenant {slug} has no kept copy to drop.")
        for copy in dropped:
            console.print(f"{name}: dropped {copy}.")
