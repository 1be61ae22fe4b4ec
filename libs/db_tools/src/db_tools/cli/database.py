"""``db NAME ...``: the commands of one database (or one migration stream, such as a registry)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from db_kit.config import DatabaseConfig
from db_kit.migrations.migrator import Migrator
from db_tools.cli.common import (
    EXIT_3,
    SQL_HELP,
    VERIFY_HELP,
    console,
    err_console,
    fail,
    handle_errors,
    offline,
    print_sql,
    revisions,
    with_database,
)
from db_tools.cli.database_tenants import database_tenants_app, migrate_tenant_databases
from db_tools.cli.schema_tenants import migrate_tenants, tenants_app
from db_tools.dev import describe, provide_url, provided_url

# Module level: annotations are evaluated in this module's globals.
START_OPTION = typer.Option(
    "--from",
    help="With --sql: the revision the database is at (default: an empty database).",
    show_default=False,
)


def _upgrade_and_report(db: DatabaseConfig) -> None:
    before, after = Migrator(db).upgrade("head")
    if before == after:
        console.print(f"{db.name}: already at head ({revisions(after)}); nothing to do.")
    else:
        console.print(f"{db.name}: upgraded {revisions(before)} -> {revisions(after)}.")


def _migrate_help(db: DatabaseConfig) -> str:
    if db.registry_of is not None:
        return (
            f"Development: upgrade the tenant registry ({db.version_table_schema} schema) to head."
        )
    if db.tenancy is not None:
        return (
            f"Development: upgrade the registry, the default schema and every tenant schema "
            f"of {db.name} to head."
        )
    if _database_per_tenant(db):
        return (
            f"Development: upgrade the {db.name} database (its tenant registry first), then "
            f"every tenant database, registered or configured, to head (a failing tenant is "
            f"reported: exit 1)."
        )
    return f"Development: upgrade the {db.name} database to head."


def _database_per_tenant(db: DatabaseConfig) -> bool:
    from db_kit.tenancy import TenantDatabaseSettings

    return db.tenancy is None and issubclass(db.settings_class, TenantDatabaseSettings)


def _owned(db: DatabaseConfig) -> str:
    """What a stream's reset drops, for help texts and prompts."""
    if db.version_table_schema:
        return f"the {db.version_table_schema} schema"
    if db.tenancy is not None:
        return "the default schema and every registered tenant schema"
    return "the default schema"


def database_app(db: DatabaseConfig) -> typer.Typer:
    """The sub-commands of one database (or one migration stream, such as a registry).

    A stream gets only the commands that apply to it: a registry has no seed, no studio
    of its own (its database's studio shows it) and no tenants.
    """
    app = typer.Typer(
        help=db.description or f"Migrations and data of the {db.name} database.",
        no_args_is_help=True,
    )
    name = db.name
    is_registry = db.registry_of is not None

    @app.command(
        help="Autogenerate a revision: the models compared with the schema the migration files "
        "build in a shadow database (never with a database that push may have changed); "
        "writes nothing when nothing changed."
    )
    @handle_errors
    def generate(
        message: Annotated[str, typer.Option("-m", "--message", help="Revision message.")],
    ) -> None:
        script = Migrator(db).generate(message)
        if script is None:
            console.print(
                f"No changes between the {name} models and the schema its migrations build; "
                "no revision written."
            )
            return
        console.print(f"Wrote revision {script.revision}: {script.path}")
        console.print(f"Review it, then run `db {name} migrate`.")

    @app.command()
    @handle_errors
    def create(
        message: Annotated[str, typer.Option("-m", "--message", help="Revision message.")],
    ) -> None:
        """Create an empty revision to write by hand."""
        script = Migrator(db).create(message)
        console.print(f"Wrote empty revision {script.revision}: {script.path}")

    def sql_note() -> str | None:
        """What an offline script of this stream leaves out (stderr)."""
        if db.tenancy is not None:
            return (
                f"this script upgrades {name}'s default schema only; the registry is "
                f"`db {name} registry migrate --sql`, tenant schemas migrate online "
                f"(`db {name} tenants migrate`)."
            )
        if _database_per_tenant(db):
            return f"run the same script in each tenant database of {name} too."
        return None

    if db.tenancy is not None:

        @app.command(help=_migrate_help(db))
        @handle_errors
        def migrate(
            workers: Annotated[
                int, typer.Option(min=1, max=64, help="Tenant worker processes.")
            ] = 2,
            verify: Annotated[bool, typer.Option(help=VERIFY_HELP)] = False,
            sql: Annotated[bool, typer.Option("--sql", help=SQL_HELP)] = False,
            start: Annotated[str | None, START_OPTION] = None,
        ) -> None:
            assert db.tenancy is not None
            if sql or start:
                offline_upgrade(sql, start)
                return
            _upgrade_and_report(db.tenancy.registry)
            _upgrade_and_report(db)
            if migrate_tenants(db, workers, verify):
                raise typer.Exit(1)

    else:

        @app.command("migrate", help=_migrate_help(db))
        @handle_errors
        def migrate_database(
            sql: Annotated[bool, typer.Option("--sql", help=SQL_HELP)] = False,
            start: Annotated[str | None, START_OPTION] = None,
        ) -> None:
            if sql or start:
                offline_upgrade(sql, start)
                return
            if db.database_tenancy is not None:
                _upgrade_and_report(db.database_tenancy.registry)
            _upgrade_and_report(db)
            if _database_per_tenant(db) and migrate_tenant_databases(db):
                raise typer.Exit(1)

    def offline_upgrade(sql: bool, start: str | None) -> None:
        if not sql:
            fail("--from is for offline scripts: add --sql.")
        print_sql(Migrator.offline(db).upgrade_sql("head", start), sql_note())

    @app.command()
    @handle_errors
    def deploy(
        sql: Annotated[
            bool,
            typer.Option(
                "--sql",
                help="Print the SQL instead of running it, after the same drift check "
                "(which builds a shadow database, so it needs a server; the target database "
                "is not touched).",
            ),
        ] = False,
        start: Annotated[str | None, START_OPTION] = None,
    ) -> None:
        """Production: upgrade to head; refused when the models differ from what the migration files build (checked in a shadow database)."""
        if sql or start:
            if not sql:
                fail("--from is for offline scripts: add --sql.")
            provide_url(db)  # the drift check's shadow database needs a server
            migrator = Migrator(db)
            diffs = migrator.unmigrated()
            if diffs:
                from db_kit.migrations.migrator import DriftError

                raise DriftError(name, diffs)
            print_sql(migrator.upgrade_sql("head", start), sql_note())
            return
        before, after = Migrator(db).deploy()
        if before == after:
            console.print(f"{name}: already at head ({revisions(after)}); nothing to do.")
        else:
            console.print(f"{name}: deployed {revisions(before)} -> {revisions(after)}.")

    @app.command(epilog=EXIT_3)
    @handle_errors
    def status() -> None:
        """Current revision, head, pending revisions, model changes no migration has, and how the database differs from what its migrations build (exit code 3 when any, or when a tenant is behind)."""
        migrator = Migrator(db)
        st = migrator.status()
        console.print(f"[bold]{name}[/] at {escape(describe(migrator.settings))}")
        console.print(f"  current: {revisions(st.current)}")
        console.print(f"  head:    {revisions(st.heads)}")
        if st.pending:
            console.print(f"  pending: {len(st.pending)} revision(s)")
            for rev in st.pending:
                console.print(f"    {rev.revision}  {rev.message}")
        else:
            console.print("  pending: none")
        if st.unmigrated:
            console.print(
                f"  models:  {len(st.unmigrated)} change(s) no migration has "
                f'(run `db {name} generate -m "..."`)'
            )
            for line in st.unmigrated:
                console.print(f"    {line}")
        if st.diverged:
            console.print(
                f"  database: differs from what its migrations build in {len(st.diverged)} "
                "place(s) (pushed or changed by hand)"
            )
            for line in st.diverged:
                console.print(f"    {line}")
            console.print(
                f'  to get out: `db {name} generate -m "..."` to put the change in a revision, '
                f"then `db {name} reset` to rebuild the database from the migrations."
            )
        if st.shadow_error:
            console.print(f"  shadow:  not built ({escape(st.shadow_error)})")
            if st.drift:
                console.print(
                    f"  drift:   {len(st.drift)} difference(s) between models and database"
                )
                for line in st.drift:
                    console.print(f"    {line}")
        if not st.drift and not st.pending:
            console.print("  drift:   none")
        behind = 0
        if db.tenancy is not None:
            from db_kit.migrations.schema_tenants import SchemaTenantMigrator

            tenants = SchemaTenantMigrator(db)
            with tenants.connect() as conn:
                ready = tenants.registry_ready(conn)
                done, todo = tenants.plan(conn) if ready else ([], [])
            behind = len(todo)
            if not ready:
                behind = 1  # the registry itself is pending
                console.print(f"  tenants: no registry yet (run `db {name} migrate`)")
            else:
                console.print(
                    f"  tenants: {len(done) + behind}, {behind} not at head"
                    + (f" (see `db {name} tenants status`)" if behind else "")
                )
        elif _database_per_tenant(db):
            from db_kit.migrations import Outcome, TenantDatabaseMigrator

            states = TenantDatabaseMigrator(db).states()
            behind = sum(s.status is not Outcome.UP_TO_DATE for s in states)
            if states:
                console.print(
                    f"  tenants: {len(states)} database(s), {behind} not at head"
                    + (f" (see `db {name} tenants status`)" if behind else "")
                )
        if st.pending or st.drift or behind:
            raise typer.Exit(3)

    @app.command()
    @handle_errors
    def history() -> None:
        """Every revision, newest first, with the current one marked."""
        migrator = Migrator(db)
        with migrator.connect() as conn:
            revisions = migrator.history(conn)
        table = Table("revision", "down", "message", "")
        for rev in revisions:
            marks = " ".join(
                m for m, on in (("current", rev.is_current), ("head", rev.is_head)) if on
            )
            table.add_row(rev.revision, rev.down_revision or "base", rev.message, marks)
        console.print(table)

    # "-1" looks like an option to Click: take unknown options as the argument.
    @app.command(context_settings={"ignore_unknown_options": True})
    @handle_errors
    def downgrade(
        revision: Annotated[
            str,
            typer.Argument(
                help="Target revision: -1 (one back), -2, base or an id; with --sql a "
                "FROM:TO range (e.g. 1a2b3c:base)."
            ),
        ],
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
        sql: Annotated[
            bool,
            typer.Option(
                "--sql",
                help="Print the downgrade SQL for a FROM:TO range instead of running it "
                "(nothing applied, no database opened; allowed in production, for review).",
            ),
        ] = False,
    ) -> None:
        """Development: downgrade to REVISION (asks first; may drop data)."""
        if revision.startswith("-") and not revision[1:].isdigit():
            fail(f"Unknown option or revision {revision!r}: use -1, -2, base or a revision id.")
        if sql:
            print_sql(Migrator.offline(db).downgrade_sql(revision), sql_note())
            return
        if ":" in revision:
            fail(f"A FROM:TO range ({revision}) is for offline scripts: add --sql.")
        migrator = Migrator(db)
        migrator.guard_development("downgrade")
        if not yes and not typer.confirm(f"Downgrade {name} to {revision}? Data may be lost."):
            fail("aborted; nothing changed.")
        before, after = migrator.downgrade(revision)
        console.print(f"{name}: downgraded {revisions(before)} -> {revisions(after)}.")

    @app.command(context_settings={"ignore_unknown_options": True})
    @handle_errors
    def stamp(
        revision: Annotated[
            str, typer.Argument(help="Revision to record: an id, head, heads or base.")
        ],
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    ) -> None:
        """Record REVISION in the version table without running any migration (a repair: after applying a revision's SQL by hand, or adopting a schema built elsewhere). Asks first in every environment, naming it in production; --yes for scripts."""
        migrator = Migrator(db)
        target = migrator.resolve(revision)  # an unknown revision fails before the prompt
        where = (
            ""
            if not migrator.settings.is_production
            else (f" ({migrator.settings.environment_label})")
        )
        if not yes and not typer.confirm(
            f"Stamp {name}{where} as {revisions(target)} without running any migration? "
            "Its tables stay as they are"
        ):
            fail("aborted; nothing changed.")
        before, after = migrator.stamp(revision)
        console.print(f"{name}: stamped {revisions(before)} -> {revisions(after)}; no SQL ran.")

    @app.command()
    @handle_errors
    @offline
    def merge(
        message: Annotated[str, typer.Option("-m", "--message", help="Revision message.")],
    ) -> None:
        """Write a revision merging every head into one (after two branches each added a revision)."""
        script = Migrator.offline(db).merge(message)
        down = script.down_revision
        merged = (down,) if isinstance(down, str) else tuple(down or ())
        console.print(
            f"Wrote merge revision {script.revision} of {revisions(merged)}: {script.path}"
        )
        console.print(f"Review it, then run `db {name} migrate`.")

    @app.command(help=f"Development: drop {_owned(db)} and migrate from scratch (asks first).")
    @handle_errors
    def reset(
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    ) -> None:
        migrator = Migrator(db)
        migrator.guard_development("reset")
        if not yes and not typer.confirm(f"Drop {_owned(db)} of {name} and rebuild it?"):
            fail("aborted; nothing changed.")
        if db.tenancy is not None:
            from db_kit.migrations.schema_tenants import SchemaTenantMigrator

            report = SchemaTenantMigrator(db).reset()
        else:
            report = migrator.reset()
        console.print(f"{name}: dropped and rebuilt schema {report.schema}, migrated to head.")
        if report.tenants_rebuilt or report.tenants_failed:
            console.print(
                f"{name}: {len(report.tenants_rebuilt)} tenant schema(s) rebuilt at head"
                + (f", failed: {', '.join(report.tenants_failed)}" if report.tenants_failed else "")
                + "."
            )
        if report.unregistered_schemas:
            shown = ", ".join(report.unregistered_schemas[:10])
            console.print(
                f"note: {len(report.unregistered_schemas)} tenant schema(s) are no longer in the "
                f"registry and were left as they are: {shown}."
            )
        if report.tenants_failed:
            raise typer.Exit(1)

    @app.command()
    @handle_errors
    def push() -> None:
        """Development: apply model changes without a revision (prototyping)."""
        applied = Migrator(db).push()
        if not applied:
            console.print(f"{name}: the database already matches the models.")
            return
        console.print(f"{name}: applied {len(applied)} change(s): {', '.join(applied)}.")
        console.print(
            "The database now differs from the migrations: generate a revision before shipping."
        )

    if not is_registry:

        @app.command("dev-url")
        @handle_errors
        def dev_url() -> None:
            """Development: the URL the app should use; starts the embedded server when no URL is set (prints nothing when the URL variable is set)."""
            url = provide_url(db) or provided_url(db)
            if url is not None:
                # The embedded server trusts loopback: its URL carries no password.
                typer.echo(url.render_as_string(hide_password=True))

    if db.seed is not None:

        @app.command()
        @handle_errors
        def seed(
            tenant: Annotated[
                str | None,
                typer.Option(help="Seed this tenant's schema (or database) instead."),
            ] = None,
        ) -> None:
            """Insert the development seed data (idempotent)."""
            from db_kit.migrations.seeding import seed as seed_database

            note = seed_database(db, tenant)
            console.print(f"{name}: seeded" + (f" tenant {tenant}." if tenant else "."))
            if note:
                console.print(note)

    if not is_registry:

        @app.command()
        @handle_errors
        def studio(
            tenant: Annotated[
                str | None,
                typer.Option(help="Browse this tenant (its schema, or its database) instead."),
            ] = None,
            write: Annotated[
                bool, typer.Option("--write", help="Allow creating, editing and deleting rows.")
            ] = False,
            host: Annotated[
                str, typer.Option(help="Interface to listen on; keep it loopback (no login).")
            ] = "127.0.0.1",
            port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 5555,
        ) -> None:
            """A web UI over the tables (read-only unless --write), on http://127.0.0.1:5555."""
            from db_kit.migrations.migrator import ProductionGuardError
            from db_tools.studio import (
                BASE_URL,
                build_studio,
                check_port_free,
                exposure_warning,
                serve,
            )

            if write and db.settings().is_production:
                raise ProductionGuardError(
                    f"Refusing `db {name} studio --write`: {db.settings().environment_label}. "
                    "Browse without --write; change production data through the app or a revision."
                )
            app_ = build_studio(db, tenant=tenant, write=write)
            warning = exposure_warning(host)
            if warning:
                err_console.print(f"[bold yellow]warning:[/] {escape(warning)}", soft_wrap=True)
            check_port_free(host, port)
            shown_host = f"[{host}]" if ":" in host else host
            mode = "read-write" if write else "read-only (start with --write to edit)"
            console.print(f"{escape(app_.title)}: {mode}")
            console.print(
                f"  database: {escape(app_.target.url.render_as_string(hide_password=True))}"
            )
            console.print(f"  open http://{shown_host}:{port}{BASE_URL}/  (Ctrl+C to stop)")
            serve(app_, host=host, port=port)

    if db.tenancy is not None:
        app.add_typer(database_app(db.tenancy.registry), name="registry")
        app.add_typer(tenants_app(db), name="tenants")
    if db.database_tenancy is not None:
        app.add_typer(database_app(db.database_tenancy.registry), name="registry")
    if db.registry is not None:
        from db_tools.cli.tenant_ops import admins_app

        app.add_typer(admins_app(db), name="admins")
    per_tenant = database_tenants_app(db)
    if per_tenant is not None:
        app.add_typer(per_tenant, name="tenants")
    return with_database(app, db)
