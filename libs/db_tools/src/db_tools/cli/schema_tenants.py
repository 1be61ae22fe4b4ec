"""``db NAME tenants ...`` of a schema-per-tenant database: provision and migrate tenant schemas."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from db_kit.config import DatabaseConfig
from db_kit.migrations.outcome import Outcome
from db_tools.cli.common import (
    EXIT_3,
    SERVER_HELP,
    VERIFY_HELP,
    console,
    fail,
    handle_errors,
    with_database,
)
from db_tools.cli.tenant_ops import _admin, add_lifecycle_commands


def _results_table(results: list[Any]) -> Table:
    table = Table("server", "tenant", "schema", "before", "after", "result", "seconds")
    for r in sorted(results, key=lambda r: (r.server, not r.failed, r.slug)):
        style = "red" if r.failed else ("green" if r.status is Outcome.MIGRATED else "dim")
        table.add_row(
            r.server or "-", r.slug, r.schema, r.before or "-", r.after or "-",
            f"[{style}]{r.status}[/]" + (f": {escape(r.error)}" if r.error else ""),
            f"{r.seconds:.2f}",
        )  # fmt: skip
    return table


def migrate_tenants(
    db: DatabaseConfig, workers: int, verify: bool = False, only: list[str] | None = None
) -> list[Any]:
    """Migrate every tenant schema (``only``: these) with a progress bar; print the
    per-tenant table."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from db_kit.migrations.schema_tenants import SchemaTenantMigrator

    progress = Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=True,
    )  # fmt: skip
    task = progress.add_task(f"{db.name} tenants", total=None)

    def started(count: int) -> None:
        progress.update(task, total=count)

    def finished(result: Any) -> None:
        progress.advance(task)

    migrator = SchemaTenantMigrator(db)
    fleet = migrator.placement.configured  # <PREFIX>SERVERS set: name each tenant's server
    with progress:
        results = migrator.migrate_all(
            workers=workers, on_start=started, on_result=finished, verify=verify, only=only
        )
    migrated = sum(r.status is Outcome.MIGRATED for r in results)
    failed = [r for r in results if r.failed]
    if migrated or failed:
        console.print(_results_table(results))
    for r in sorted(failed, key=lambda r: (r.server, r.slug)):  # whole: a cell cuts it short
        where = f" ({r.server})" if fleet and r.server else ""
        console.print(f"  {r.slug}{where}: [red]failed[/]: {escape(r.error or '')}")
    servers = sorted({r.server for r in failed if r.server}) if fleet else []
    console.print(
        f"{db.name} tenants: {migrated} migrated, {len(results) - migrated - len(failed)} "
        f"already at head, {len(failed)} failed"
        + (f" (on {', '.join(servers)})" if servers else "")
        + ("; rerun to resume." if failed else ".")
    )
    return failed


def tenants_app(db: DatabaseConfig) -> typer.Typer:
    """``db NAME tenants ...``: schema-per-tenant provisioning and migrations."""
    from db_kit.migrations.schema_tenants import SchemaTenantMigrator

    app = typer.Typer(help=f"Tenant schemas of the {db.name} database.", no_args_is_help=True)
    name = db.name

    @app.command("create")
    @handle_errors
    def create(
        slug: Annotated[str, typer.Argument(help="Lower-case letters, digits, _; 1-40 chars.")],
        title: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
        region: Annotated[str | None, typer.Option(help="Region label, e.g. us or eu.")] = None,
        server: Annotated[str | None, typer.Option(help=SERVER_HELP)] = None,
    ) -> None:
        """Register a tenant, create its schema on its server and migrate it (audited)."""
        started = time.perf_counter()
        info = _admin(db).create(slug, title, region, server=server)
        console.print(
            f"{name}: tenant {slug} created in schema {info.location} on server {info.server} "
            f"at {info.revision} ({time.perf_counter() - started:.2f}s)."
        )

    @app.command("list")
    @handle_errors
    def list_tenants() -> None:
        """Every tenant with its schema, status and revision."""
        migrator = SchemaTenantMigrator(db)
        with migrator.connect() as conn:
            rows = migrator.tenants(conn)
        table = Table("server", "tenant", "schema", "status", "revision")
        for server, group in migrator.by_server(rows).items():
            for row in group:
                table.add_row(server, row.slug, row.schema, row.status, row.revision or "-")
        console.print(table)

    @app.command("status", epilog=EXIT_3)
    @handle_errors
    def status() -> None:
        """Per tenant: current revision, head, and the last migration error if any (exit code 3 when any tenant is not at head)."""
        migrator = SchemaTenantMigrator(db)
        head = migrator.head()
        with migrator.connect() as conn:
            rows = migrator.tenants(conn)
            versions, down = migrator.fleet_versions(conn, rows)
        table = Table("server", "tenant", "schema", "current", "head", "state")
        behind = 0
        groups = migrator.by_server(rows)
        for server, group in groups.items():
            for row in group:
                current = versions[row.schema]
                state: str = Outcome.UP_TO_DATE if current == head else Outcome.PENDING
                if server in down:
                    state = f"[red]{Outcome.UNREACHABLE}[/]"
                elif row.last_error:
                    state = "[red]failed[/]"
                behind += current != head
                table.add_row(server, row.slug, row.schema, current or "-", head, state)
        console.print(table)
        for server, reason in down.items():
            console.print(f"  {server}: [red]{escape(reason)}[/]")
        for group in groups.values():  # whole, below the table: a cell would cut it short
            for row in group:
                if row.last_error:
                    console.print(f"  {row.slug}: [red]failed[/]: {escape(row.last_error)}")
        console.print(f"{len(rows)} tenant(s), {behind} not at head.")
        if behind:
            raise typer.Exit(3)

    @app.command("migrate")
    @handle_errors
    def migrate(
        workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 2,
        verify: Annotated[bool, typer.Option(help=VERIFY_HELP)] = False,
        tenant: Annotated[
            list[str] | None,
            typer.Option(
                "--tenant",
                help="Only this tenant (repeat for several); an unknown one migrates nothing.",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        """Bring every tenant schema to head, in parallel; rerun to resume after a failure."""
        if migrate_tenants(db, workers, verify, tenant or None):
            raise typer.Exit(1)

    @app.command("drop")
    @handle_errors
    def drop(
        slug: str,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    ) -> None:
        """Drop a tenant's schema and all its data (asks first)."""
        if not yes and not typer.confirm(f"Drop tenant {slug} and ALL its data?"):
            fail("aborted; nothing changed.")
        _admin(db).drop(slug)
        console.print(f"{name}: tenant {slug} dropped.")

    add_lifecycle_commands(app, db)
    return with_database(app, db)
