"""``db NAME tenants ...`` of a database-per-tenant library: its tenant databases."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from db_kit.config import DatabaseConfig
from db_kit.migrations.outcome import Outcome
from db_tools.cli.common import (
    EXIT_3,
    SERVER_HELP,
    console,
    fail,
    handle_errors,
    with_database,
)
from db_tools.cli.tenant_ops import _admin, add_lifecycle_commands

CREATE_URL_HELP = (
    "The tenant database URL, for a tenant of the tenant map kept outside the registry "
    "(without it, a new tenant is registered and its database made on the control server)."
)


def migrate_tenant_databases(db: DatabaseConfig, only: list[str] | None = None) -> int:
    """Upgrade the configured tenant databases (``only``: these), one line each and a
    summary; returns how many failed."""
    from db_kit.migrations import TenantDatabaseMigrator, TenantDatabaseResult

    migrator = TenantDatabaseMigrator(db)
    fleet = migrator.placement.configured  # <PREFIX>SERVERS set: name each tenant's server

    def report(r: TenantDatabaseResult) -> None:
        where = f" ({r.server})" if fleet and r.server else ""
        if r.failed:
            console.print(f"  {r.slug}{where}: [red]failed[/]: {escape(r.error or '')}")
        else:
            change = f"{r.before or '(empty)'} -> {r.after}" if r.before != r.after else ""
            console.print(f"  {r.slug}{where}: {r.status} {change}".rstrip())

    if only is None and not migrator.resolver.tenants:
        return 0  # no tenant database configured: nothing to say
    results = migrator.migrate_all(on_result=report, only=only)
    migrated = sum(r.status is Outcome.MIGRATED for r in results)
    failed = sum(r.failed for r in results)
    servers = sorted({r.server for r in results if r.failed and r.server}) if fleet else []
    console.print(
        f"{db.name} tenant databases: {migrated} migrated, "
        f"{len(results) - migrated - failed} already at head, {failed} failed"
        + (f" (on {', '.join(servers)})" if servers else "")
        + ("; rerun to resume." if failed else ".")
    )
    return failed


def database_tenants_app(db: DatabaseConfig) -> typer.Typer | None:
    """``db NAME tenants ...`` of a database-per-tenant library; None for any other database.

    A library is database-per-tenant when its settings derive from
    ``TenantDatabaseSettings``; its tenants are the settings' URL map.
    """
    from db_kit.migrations import TenantDatabaseMigrator
    from db_kit.tenancy import TenantDatabaseSettings
    from db_shared.tenancy import UnknownTenantError, validate_tenant_slug

    if db.tenancy is not None or not issubclass(db.settings_class, TenantDatabaseSettings):
        return None
    variable = db.settings_class.tenant_urls_variable
    app = typer.Typer(
        help=f"Tenant databases of {db.name} (one database per tenant: registered in its "
        f"control registry, or listed in {variable}).",
        no_args_is_help=True,
    )
    name = db.name

    registry = db.database_tenancy is not None

    def unknown(slug: str) -> None:
        fail(f"Unknown tenant {slug!r}: add it to {variable} or pass --url.")

    @app.command("create")
    @handle_errors
    def create(
        slug: Annotated[str, typer.Argument(help="Lower-case letters, digits, _; 1-40 chars.")],
        url: Annotated[str | None, typer.Option(help=CREATE_URL_HELP)] = None,
        title: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
        region: Annotated[str | None, typer.Option(help="Region label, e.g. us or eu.")] = None,
        server: Annotated[str | None, typer.Option(help=SERVER_HELP)] = None,
    ) -> None:
        """Create the tenant's database (when missing) and migrate it to head; a tenant not
        in the tenant map and given no --url is registered in the control registry (its
        database made on the control server, served without a restart; audited)."""
        validate_tenant_slug(slug)
        migrator = TenantDatabaseMigrator(db)
        if registry and url is None and slug not in migrator.static:
            info = _admin(db).create(slug, title, region, server=server)
            console.print(
                f"{name}: tenant {slug} registered, database {info.location} created on "
                f"server {info.server} and migrated, at {info.revision or '-'}."
            )
            if not db.settings().multi_tenant:
                prefix = str(db.settings_class.model_config.get("env_prefix", "")).upper()
                console.print(
                    f"Apps serve registered tenants with {prefix}MULTI_TENANT=true (it is off)."
                )
            return
        try:
            result = migrator.create(slug, url, server=server)
        except UnknownTenantError:
            unknown(slug)
            return
        done = "created and migrated" if result.status is Outcome.CREATED else result.status
        console.print(
            f"{name}: tenant {slug} database {result.database} {done}, at "
            f"{result.after or '-'} ({result.seconds:.2f}s)."
        )

    @app.command("list")
    @handle_errors
    def list_tenants() -> None:
        """Every configured tenant with its database, revision and state."""
        migrator = TenantDatabaseMigrator(db)
        states = migrator.states()
        table = Table("server", "tenant", "database", "status", "revision", "state")
        for st in states:
            style = {Outcome.UP_TO_DATE: "green", Outcome.PENDING: "yellow"}.get(st.status, "red")
            status = (
                "static map"
                if st.slug in migrator.static
                else migrator.registered.get(st.slug, (None, "-"))[1]
            )
            table.add_row(
                st.server or "-", st.slug, st.database, status, st.revision or "-",
                f"[{style}]{st.state}[/]",
            )  # fmt: skip
        console.print(table)
        for st in states:
            if st.error:
                console.print(f"  {st.slug}: {escape(st.error)}")
        console.print(f"{len(states)} tenant database(s) in {migrator.resolver_source}.")

    @app.command("status", epilog=EXIT_3)
    @handle_errors
    def status() -> None:
        """Per tenant database: current revision, head and state (exit code 3 when any is behind, missing or unreachable)."""
        migrator = TenantDatabaseMigrator(db)
        head = migrator.head() or "(several heads: merge them)"
        states = migrator.states()
        table = Table("server", "tenant", "database", "current", "head", "state")
        behind = 0
        for st in states:
            style = {Outcome.UP_TO_DATE: "green", Outcome.PENDING: "yellow"}.get(st.status, "red")
            behind += st.status is not Outcome.UP_TO_DATE
            table.add_row(
                st.server or "-", st.slug, st.database, st.revision or "-", head,
                f"[{style}]{st.state}[/]",
            )  # fmt: skip
        console.print(table)
        for st in states:
            if st.error:
                console.print(f"  {st.slug}: {escape(st.error)}")
        console.print(
            f"{len(states)} tenant database(s) in {migrator.resolver_source}, {behind} not at head."
        )
        if behind:
            raise typer.Exit(3)

    @app.command("migrate")
    @handle_errors
    def migrate(
        tenant: Annotated[
            list[str] | None,
            typer.Option(
                "--tenant",
                help="Only this tenant (repeat for several); an unknown one migrates nothing.",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        """Upgrade every configured tenant database to head, one after the other."""
        if migrate_tenant_databases(db, tenant or None):
            raise typer.Exit(1)

    @app.command("drop")
    @handle_errors
    def drop(
        slug: str,
        url: Annotated[
            str | None, typer.Option(help="The tenant database URL, when the tenant map lacks it.")
        ] = None,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
        force: Annotated[
            bool, typer.Option("--force", help="End the sessions still connected to it.")
        ] = False,
    ) -> None:
        """Drop a tenant's database and all its data (asks first)."""
        validate_tenant_slug(slug)
        migrator = TenantDatabaseMigrator(db)
        try:
            target = migrator.url_for(slug, url)
        except UnknownTenantError:
            unknown(slug)
            return
        shown = f"{target.host}:{target.port or 5432}/{target.database}"
        if not yes and not typer.confirm(
            f"Drop tenant {slug}'s database {shown} and ALL its data?"
        ):
            fail("aborted; nothing changed.")
        if url is None and slug in migrator.registered and slug not in migrator.static:
            _admin(db).drop(slug, force=force)
            console.print(f"{name}: tenant {slug} database {shown} dropped and unregistered.")
            return
        if migrator.drop(slug, url, force=force):
            console.print(f"{name}: tenant {slug} database {shown} dropped.")
        else:
            console.print(f"{name}: tenant {slug} database {shown} did not exist.")
        if slug in migrator.static:
            console.print(f"Remove {slug} from {variable} too.")

    if registry:
        add_lifecycle_commands(app, db)
    return with_database(app, db)
