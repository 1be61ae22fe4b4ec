"""Tenant lifecycle commands, the same for both tenancy modes (``db_kit.tenancy.admin``):

``db NAME tenants suspend|reactivate|rename|clone|show|audit|move|moves|drop-moved``,
``db NAME tenants domains add|remove``, ``db NAME tenants plugins ...`` and
``db NAME admins ...``. Every change is recorded in the registry's audit with the operator
(``cli:<user>@<host>``) and the time.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from db_tools.cli.common import cli_actor, console, err_console, fail, with_database

if TYPE_CHECKING:
    from db_kit.config import DatabaseConfig
    from db_kit.tenancy.admin import TenantAdmin, TenantInfo

__all__ = ["add_lifecycle_commands", "admins_app", "cli_actor"]

SLUG = Annotated[str, typer.Argument(help="The tenant's slug.", show_default=False)]


def _admin(db: DatabaseConfig) -> TenantAdmin:
    from db_kit.tenancy.admin import TenantAdmin

    return TenantAdmin(db, actor=cli_actor())


def _show(db: DatabaseConfig, info: TenantInfo) -> None:
    where = "schema" if db.tenancy is not None else "database"
    console.print(f"{db.name}: tenant [bold]{info.slug}[/] ({escape(info.name)})")
    console.print(f"  status:   {info.status}")
    console.print(f"  {where}: {' ' * (8 - len(where))}{info.location}")
    console.print(f"  server:   {info.server}")
    console.print(f"  region:   {info.region or '-'}")
    console.print(f"  revision: {info.revision or '-'}")
    if info.last_error:
        console.print(f"  last migration error: {escape(info.last_error)}")
    console.print(f"  domains:  {', '.join(info.domains) or '-'}")
    plugins = ", ".join(f"{p}{'' if on else ' (disabled)'}" for p, on in info.plugins)
    console.print(f"  plugins:  {plugins or '-'}")


def add_lifecycle_commands(app: typer.Typer, db: DatabaseConfig) -> None:
    """Add the lifecycle commands to a ``db NAME tenants`` app (before ``with_database``),
    the move commands (``db_tools.cli.tenant_moves``) included."""
    from db_tools.cli.tenant_moves import add_move_commands

    name = db.name
    add_move_commands(app, db)

    @app.command("show")
    def show(slug: SLUG) -> None:
        """A registered tenant: status, where its data lives, domains and plugins."""
        _show(db, _admin(db).tenant(slug))

    @app.command("suspend")
    def suspend(
        slug: SLUG,
        reason: Annotated[str | None, typer.Option(help="Why (kept in the audit).")] = None,
    ) -> None:
        """Refuse the tenant's requests (403 tenant_suspended) in every worker at once; its
        data is kept until it is reactivated."""
        info = _admin(db).suspend(slug, reason)
        console.print(f"{name}: tenant {info.slug} is {info.status}.")

    @app.command("reactivate")
    def reactivate(slug: SLUG) -> None:
        """Serve a suspended tenant again."""
        info = _admin(db).reactivate(slug)
        console.print(f"{name}: tenant {info.slug} is {info.status}.")

    @app.command("rename")
    def rename(
        slug: SLUG,
        new_slug: Annotated[str, typer.Argument(help="The new slug.", show_default=False)],
    ) -> None:
        """Give a tenant a new slug; its data is kept (schema-per-tenant: the schema is
        renamed with it; database-per-tenant: the database keeps its name)."""
        info = _admin(db).rename(slug, new_slug)
        console.print(f"{name}: tenant {slug} is now {info.slug} ({info.location}).")
        console.print("Update host maps and headers that name the old slug.")

    @app.command("clone")
    def clone(
        template: Annotated[str, typer.Argument(help="The tenant to copy.", show_default=False)],
        slug: Annotated[str, typer.Argument(help="The new tenant's slug.", show_default=False)],
        title: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
        region: Annotated[
            str | None, typer.Option(help="Region (default: the template's).")
        ] = None,
    ) -> None:
        """A new tenant with a copy of TEMPLATE's data and plugins (not its domains)."""
        info = _admin(db).clone(template, slug, title, region)
        console.print(f"{name}: tenant {info.slug} cloned from {template} into {info.location}.")

    @app.command("audit")
    def audit(
        tenant: Annotated[str | None, typer.Option(help="Only this tenant's changes.")] = None,
        limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
    ) -> None:
        """Who changed which tenant, when, and how (newest first)."""
        entries = _admin(db).audit(tenant, limit=limit)
        table = Table("when", "who", "action", "tenant", "detail")
        for e in entries:
            table.add_row(
                e.at.isoformat(timespec="seconds"),
                escape(e.actor),
                e.action,
                e.tenant or "-",
                escape(json.dumps(e.detail, sort_keys=True)),
            )
        console.print(table)

    domains = typer.Typer(help="Host names served as a tenant (no restart needed).")

    @domains.command("add")
    def add_domain(
        slug: SLUG,
        domain: Annotated[str, typer.Argument(help="e.g. acme.example.com", show_default=False)],
        primary: Annotated[bool, typer.Option(help="The tenant's main host name.")] = False,
    ) -> None:
        """Serve DOMAIN as the tenant."""
        info = _admin(db).add_domain(slug, domain, primary=primary)
        console.print(f"{name}: tenant {info.slug} domains: {', '.join(info.domains)}.")

    @domains.command("remove")
    def remove_domain(
        domain: Annotated[str, typer.Argument(help="The host name.", show_default=False)],
    ) -> None:
        """Stop serving DOMAIN."""
        slug = _admin(db).remove_domain(domain)
        console.print(f"{name}: {domain.lower()} no longer serves tenant {slug}.")

    plugins = typer.Typer(help="The plugin catalogue, and plugins per tenant.")

    @plugins.command("list")
    def list_plugins() -> None:
        """The catalogue."""
        table = Table("plugin", "name", "version")
        for row in _admin(db).plugins():
            table.add_row(*(escape(v) for v in row))
        console.print(table)

    @plugins.command("add")
    def add_plugin(
        plugin: Annotated[str, typer.Argument(help="Plugin id, e.g. billing.", show_default=False)],
        title: Annotated[str, typer.Option("--name", help="Display name.")],
        version: Annotated[str, typer.Option(help="e.g. 1.2.0")],
    ) -> None:
        """Put a plugin in the catalogue (or update its name and version)."""
        _admin(db).add_plugin(plugin, title, version)
        console.print(f"{name}: plugin {plugin} {version} in the catalogue.")

    @plugins.command("enable")
    def enable(
        slug: SLUG,
        plugin: Annotated[str, typer.Argument(help="Plugin id.", show_default=False)],
        config: Annotated[
            str | None, typer.Option(help='Its configuration, a JSON object: {"key": 1}.')
        ] = None,
    ) -> None:
        """Enable a catalogue plugin for the tenant (installing it when new)."""
        configuration: dict[str, Any] | None = None
        if config is not None:
            try:
                configuration = json.loads(config)
            except json.JSONDecodeError as exc:
                fail(f"--config is not valid JSON ({exc.msg} at character {exc.pos}).")
            if not isinstance(configuration, dict):
                fail('--config must be a JSON object, such as {"key": 1}.')
        _admin(db).set_plugin(slug, plugin, enabled=True, configuration=configuration)
        console.print(f"{name}: plugin {plugin} enabled for tenant {slug}.")

    @plugins.command("disable")
    def disable(
        slug: SLUG,
        plugin: Annotated[str, typer.Argument(help="Plugin id.", show_default=False)],
    ) -> None:
        """Disable a plugin for the tenant (its configuration is kept)."""
        _admin(db).set_plugin(slug, plugin, enabled=False)
        console.print(f"{name}: plugin {plugin} disabled for tenant {slug}.")

    app.add_typer(with_database(domains, db), name="domains")
    app.add_typer(with_database(plugins, db), name="plugins")


def admins_app(db: DatabaseConfig) -> typer.Typer:
    """``db NAME admins ...``: operators with access to every tenant (the admin API)."""
    app = typer.Typer(
        help=f"Super admins of {db.name}: operators of every tenant, and their API tokens.",
        no_args_is_help=True,
    )
    name = db.name

    @app.command("list")
    def list_admins() -> None:
        """Every super admin and whether they hold an API token."""
        table = Table("email", "external id", "token", "since")
        for a in _admin(db).super_admins():
            table.add_row(
                escape(a.email),
                escape(a.external_id),
                "yes" if a.has_token else "-",
                a.created_at.date().isoformat(),
            )
        console.print(table)

    def _print_token(token: str) -> None:
        console.print(token, markup=False)
        err_console.print(
            "This is the admin API token (Authorization: Bearer ...); it is shown once and "
            "only its hash is kept. Store it in your secret manager."
        )

    @app.command("add")
    def add(
        email: Annotated[str, typer.Argument(help="The admin's e-mail.", show_default=False)],
        external_id: Annotated[
            str | None, typer.Option(help="Their id at the identity provider (default: email).")
        ] = None,
    ) -> None:
        """Add a super admin; prints their API token once."""
        token = _admin(db).add_super_admin(email, external_id)
        err_console.print(f"{name}: {email.strip().lower()} is a super admin.")
        _print_token(token)

    @app.command("token")
    def token(
        email: Annotated[str, typer.Argument(help="The admin's e-mail.", show_default=False)],
    ) -> None:
        """Issue a new API token (the old one stops working at once); prints it once."""
        _print_token(_admin(db).rotate_admin_token(email))

    @app.command("remove")
    def remove(
        email: Annotated[str, typer.Argument(help="The admin's e-mail.", show_default=False)],
    ) -> None:
        """Remove a super admin; their token stops working at once."""
        _admin(db).remove_super_admin(email)
        console.print(f"{name}: {email.strip().lower()} is no longer a super admin.")

    return with_database(app, db)
