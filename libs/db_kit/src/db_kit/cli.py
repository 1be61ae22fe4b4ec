"""The ``db`` command: one sub-command group per database library.

Database libraries register a ``DatabaseConfig`` under the ``db_kit.databases`` entry-point
group, so a new database appears here (and in the Makefile's pattern rules) with no edit;
``db new NAME`` writes such a library (see ``db_kit.scaffold``).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Annotated, Any, TypeVar

import typer
from alembic.util import CommandError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from db_kit.config import DatabaseConfig
from db_kit.migrations import Migrator
from db_shared.errors import DatabaseError

ENTRY_POINT_GROUP = "db_kit.databases"
VERIFY_HELP = (
    "Read every tenant's version table instead of trusting registry rows at head "
    "(after restoring a schema from a backup or running Alembic by hand)."
)
F = TypeVar("F", bound=Callable[..., Any])

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False)


def discover() -> dict[str, DatabaseConfig]:
    """Every database config installed in this environment, by name."""
    found: dict[str, DatabaseConfig] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        config = ep.load()
        if not isinstance(config, DatabaseConfig):
            continue
        found[config.name] = config
    return dict(sorted(found.items()))


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
                from db_kit.lock_retries import LOCK_NOT_AVAILABLE, sqlstate

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


def _upgrade_and_report(db: DatabaseConfig) -> None:
    before, after = Migrator(db).upgrade("head")
    if before == after:
        console.print(f"{db.name}: already at head ({_revs(after)}); nothing to do.")
    else:
        console.print(f"{db.name}: upgraded {_revs(before)} -> {_revs(after)}.")


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
            f"Development: upgrade the {db.name} database to head (its tenant databases: "
            f"`db {db.name} tenants migrate`)."
        )
    return f"Development: upgrade the {db.name} database to head."


def _database_per_tenant(db: DatabaseConfig) -> bool:
    from db_kit.tenant_databases import TenantDatabaseSettings

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

    if db.tenancy is not None:

        @app.command(help=_migrate_help(db))
        @handle_errors
        def migrate(
            workers: Annotated[
                int, typer.Option(min=1, max=64, help="Tenant worker processes.")
            ] = 2,
            verify: Annotated[bool, typer.Option(help=VERIFY_HELP)] = False,
        ) -> None:
            assert db.tenancy is not None
            _upgrade_and_report(db.tenancy.registry)
            _upgrade_and_report(db)
            if migrate_tenants(db, workers, verify):
                raise typer.Exit(1)

    else:

        @app.command("migrate", help=_migrate_help(db))
        @handle_errors
        def migrate_database() -> None:
            _upgrade_and_report(db)

    @app.command()
    @handle_errors
    def deploy() -> None:
        """Production: upgrade to head; refused when the models differ from what the
        migration files build (checked in a shadow database)."""
        before, after = Migrator(db).deploy()
        if before == after:
            console.print(f"{name}: already at head ({_revs(after)}); nothing to do.")
        else:
            console.print(f"{name}: deployed {_revs(before)} -> {_revs(after)}.")

    @app.command()
    @handle_errors
    def status() -> None:
        """Current revision, head, pending revisions, model changes no migration has, and
        how the database differs from what its migrations build (exit 3 when any)."""
        migrator = Migrator(db)
        st = migrator.status()
        console.print(f"[bold]{name}[/] at {migrator.settings.safe_url()}")
        console.print(f"  current: {_revs(st.current)}")
        console.print(f"  head:    {_revs(st.heads)}")
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
            from db_kit.tenant_migrations import TenantMigrator

            tenants = TenantMigrator(db)
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
            str, typer.Argument(help="Target revision: -1 (one back), -2, base or an id.")
        ],
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    ) -> None:
        """Development: downgrade to REVISION (asks first; may drop data)."""
        if revision.startswith("-") and not revision[1:].isdigit():
            _fail(f"Unknown option or revision {revision!r}: use -1, -2, base or a revision id.")
        migrator = Migrator(db)
        migrator.guard_development("downgrade")
        if not yes and not typer.confirm(f"Downgrade {name} to {revision}? Data may be lost."):
            _fail("aborted; nothing changed.")
        before, after = migrator.downgrade(revision)
        console.print(f"{name}: downgraded {_revs(before)} -> {_revs(after)}.")

    @app.command(help=f"Development: drop {_owned(db)} and migrate from scratch (asks first).")
    @handle_errors
    def reset(
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    ) -> None:
        migrator = Migrator(db)
        migrator.guard_development("reset")
        if not yes and not typer.confirm(f"Drop {_owned(db)} of {name} and rebuild it?"):
            _fail("aborted; nothing changed.")
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

    if db.seed is not None:

        @app.command()
        @handle_errors
        def seed(
            tenant: Annotated[
                str | None, typer.Option(help="Seed this tenant's schema instead of the default.")
            ] = None,
        ) -> None:
            """Insert the development seed data (idempotent)."""
            note = Migrator(db).seed(tenant)
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
            from db_kit.migrations import ProductionGuardError
            from db_kit.studio import (
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
    per_tenant = database_tenants_app(db)
    if per_tenant is not None:
        app.add_typer(per_tenant, name="tenants")
    return app


def _results_table(results: list[Any]) -> Table:
    table = Table("tenant", "schema", "before", "after", "result", "seconds")
    for r in sorted(results, key=lambda r: (not r.failed, r.slug)):
        style = "red" if r.failed else ("green" if r.status == "migrated" else "dim")
        table.add_row(
            r.slug, r.schema, r.before or "-", r.after or "-",
            f"[{style}]{r.status}[/]" + (f": {escape(r.error)}" if r.error else ""),
            f"{r.seconds:.2f}",
        )  # fmt: skip
    return table


def migrate_tenants(db: DatabaseConfig, workers: int, verify: bool = False) -> list[Any]:
    """Migrate every tenant schema with a progress bar; print the per-tenant table."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from db_kit.tenant_migrations import TenantMigrator

    progress = Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=True,
    )  # fmt: skip
    task = progress.add_task(f"{db.name} tenants", total=None)

    def started(count: int) -> None:
        progress.update(task, total=count)

    def finished(result: Any) -> None:
        progress.advance(task)

    with progress:
        results = TenantMigrator(db).migrate_all(
            workers=workers, on_start=started, on_result=finished, verify=verify
        )
    migrated = sum(r.status == "migrated" for r in results)
    failed = [r for r in results if r.failed]
    if migrated or failed:
        console.print(_results_table(results))
    console.print(
        f"{db.name} tenants: {migrated} migrated, {len(results) - migrated - len(failed)} "
        f"already at head, {len(failed)} failed."
    )
    return failed


def tenants_app(db: DatabaseConfig) -> typer.Typer:
    """``db NAME tenants ...``: schema-per-tenant provisioning and migrations."""
    from db_kit.tenant_migrations import TenantMigrator

    app = typer.Typer(help=f"Tenant schemas of the {db.name} database.", no_args_is_help=True)
    name = db.name

    @app.command("create")
    @handle_errors
    def create(
        slug: Annotated[str, typer.Argument(help="Lower-case letters, digits, _; 1-40 chars.")],
        title: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
        region: Annotated[str | None, typer.Option(help="Region label, e.g. us or eu.")] = None,
    ) -> None:
        """Register a tenant, create its schema and migrate it (one transaction)."""
        result = TenantMigrator(db).create(slug, title, region)
        console.print(
            f"{name}: tenant {slug} created in schema {result.schema} at {result.after} "
            f"({result.seconds:.2f}s)."
        )

    @app.command("list")
    @handle_errors
    def list_tenants() -> None:
        """Every tenant with its schema, status and revision."""
        migrator = TenantMigrator(db)
        with migrator.connect() as conn:
            rows = migrator.tenants(conn)
        table = Table("tenant", "schema", "status", "revision")
        for row in rows:
            table.add_row(row.slug, row.schema, row.status, row.revision or "-")
        console.print(table)

    @app.command("status")
    @handle_errors
    def status() -> None:
        """Per tenant: current revision, head, and the last migration error if any."""
        migrator = TenantMigrator(db)
        head = migrator.head()
        with migrator.connect() as conn:
            rows = migrator.tenants(conn)
            versions = migrator.versions(conn, [r.schema for r in rows])
        table = Table("tenant", "schema", "current", "head", "state")
        behind = 0
        for row in rows:
            current = versions[row.schema]
            state = "up to date" if current == head else "pending"
            if row.last_error:
                state = f"[red]failed[/]: {escape(row.last_error)}"
            behind += current != head
            table.add_row(row.slug, row.schema, current or "-", head, state)
        console.print(table)
        console.print(f"{len(rows)} tenant(s), {behind} not at head.")
        if behind:
            raise typer.Exit(3)

    @app.command("migrate")
    @handle_errors
    def migrate(
        workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 2,
        verify: Annotated[bool, typer.Option(help=VERIFY_HELP)] = False,
    ) -> None:
        """Bring every tenant schema to head, in parallel; rerun to resume after a failure."""
        if migrate_tenants(db, workers, verify):
            raise typer.Exit(1)

    @app.command("drop")
    @handle_errors
    def drop(
        slug: str,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    ) -> None:
        """Drop a tenant's schema and all its data (asks first)."""
        if not yes and not typer.confirm(f"Drop tenant {slug} and ALL its data?"):
            _fail("aborted; nothing changed.")
        TenantMigrator(db).drop(slug)
        console.print(f"{name}: tenant {slug} dropped.")

    return app


def database_tenants_app(db: DatabaseConfig) -> typer.Typer | None:
    """``db NAME tenants ...`` of a database-per-tenant library; None for any other database.

    A library is database-per-tenant when its settings derive from
    ``TenantDatabaseSettings``; its tenants are the settings' URL map.
    """
    from db_kit.tenant_databases import (
        TenantDatabaseMigrator,
        TenantDatabaseResult,
        TenantDatabaseSettings,
    )
    from db_shared.tenancy import UnknownTenantError, validate_tenant_slug

    if db.tenancy is not None or not issubclass(db.settings_class, TenantDatabaseSettings):
        return None
    variable = db.settings_class.tenant_urls_variable
    app = typer.Typer(
        help=f"Tenant databases of {db.name} (one database per tenant, from {variable}).",
        no_args_is_help=True,
    )
    name = db.name

    def unknown(slug: str) -> None:
        _fail(f"Unknown tenant {slug!r}: add it to {variable} or pass --url.")

    @app.command("create")
    @handle_errors
    def create(
        slug: Annotated[str, typer.Argument(help="Lower-case letters, digits, _; 1-40 chars.")],
        url: Annotated[
            str | None, typer.Option(help="The tenant database URL, when the tenant map lacks it.")
        ] = None,
    ) -> None:
        """Create the tenant's database (when missing) and migrate it to head."""
        validate_tenant_slug(slug)
        try:
            result = TenantDatabaseMigrator(db).create(slug, url)
        except UnknownTenantError:
            unknown(slug)
            return
        done = "created and migrated" if result.status == "created" else result.status
        console.print(
            f"{name}: tenant {slug} database {result.database} {done}, at "
            f"{result.after or '-'} ({result.seconds:.2f}s)."
        )

    @app.command("list")
    @handle_errors
    def list_tenants() -> None:
        """Every configured tenant with its database, revision and state."""
        states = TenantDatabaseMigrator(db).states()
        table = Table("tenant", "database", "revision", "state")
        for st in states:
            style = {"up to date": "green", "pending": "yellow"}.get(st.state, "red")
            table.add_row(st.slug, st.database, st.revision or "-", f"[{style}]{st.state}[/]")
        console.print(table)
        for st in states:
            if st.error:
                console.print(f"  {st.slug}: {escape(st.error)}")
        console.print(f"{len(states)} tenant database(s) in {variable}.")

    @app.command("migrate")
    @handle_errors
    def migrate() -> None:
        """Upgrade every configured tenant database to head, one after the other."""

        def report(r: TenantDatabaseResult) -> None:
            if r.failed:
                console.print(f"  {r.slug}: [red]failed[/]: {escape(r.error or '')}")
            else:
                change = f"{r.before or '(empty)'} -> {r.after}" if r.before != r.after else ""
                console.print(f"  {r.slug}: {r.status} {change}".rstrip())

        results = TenantDatabaseMigrator(db).migrate_all(on_result=report)
        migrated = sum(r.status == "migrated" for r in results)
        failed = sum(r.failed for r in results)
        console.print(
            f"{name} tenant databases: {migrated} migrated, "
            f"{len(results) - migrated - failed} already at head, {failed} failed."
        )
        if failed:
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
            _fail("aborted; nothing changed.")
        if migrator.drop(slug, url, force=force):
            console.print(f"{name}: tenant {slug} database {shown} dropped.")
        else:
            console.print(f"{name}: tenant {slug} database {shown} did not exist.")
        if slug in migrator.resolver.tenants:
            console.print(f"Remove {slug} from {variable} too.")

    return app


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


def new_database(name: str, modules: str | None, *, sync: bool = True) -> None:
    """``db new``: validate everything, write the library, its first revision, install it."""
    from db_kit import scaffold
    from db_kit.settings import workspace_root

    root = workspace_root()
    pyproject = root / "pyproject.toml"
    if not (pyproject.exists() and (root / "libs").is_dir()):
        _fail(f"{root} is not the workspace root (no pyproject.toml and libs/); run db new there.")
    scaffold.check_name(name, root)
    chosen = scaffold.choose_modules(modules, scaffold.shared_modules(root))
    plan = scaffold.Scaffold(name, root, chosen)
    registered = scaffold.register_in_workspace(pyproject.read_text(encoding="utf-8"), plan)
    scaffold.write_library(plan, registered)
    shown = ", ".join(m.package for m in chosen) or "none"
    console.print(f"Created libs/{plan.package} (shared modules: {shown}).")
    console.print(
        f"Registered {plan.distribution} in pyproject.toml (dependencies, uv sources, ruff, mypy)."
    )
    try:
        revision = scaffold.write_initial_revision(plan)
    except Exception as exc:
        from db_kit.errors import translate

        problem = translate(exc) or exc
        if not isinstance(problem, DatabaseError):
            raise
        # The library stays: it is complete but for its first revision.
        _fail(
            f"{str(problem).rstrip('.')}. libs/{plan.package} was created without its initial "
            f'revision: once fixed, run `{scaffold.sync_commands()}` and `db {name} generate -m "'
            f'{scaffold.INITIAL_MESSAGE}"`.'
        )
        return
    console.print(f"Wrote the initial revision: {revision.relative_to(root)}")
    if sync:
        scaffold.install(root)
        console.print(f"Installed {plan.distribution}: `db {name} ...` is ready.")
    else:
        console.print(f"Run `{scaffold.sync_commands()}` to install it, then `db {name} ...`.")
    console.print(
        f"Next: set {plan.url_variable} (unset in development: the embedded server's "
        f'"{name}" database), then `make db-{name}-migrate`.'
    )


def main() -> None:
    app = build_app()
    sys.exit(app())
