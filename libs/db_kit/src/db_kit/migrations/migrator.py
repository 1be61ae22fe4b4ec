"""Migration operations on one database: what the ``db`` CLI and the tests call."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata, produce_migrations
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import ColumnElement, Connection, Engine, MetaData, inspect, select, text
from sqlalchemy.engine import URL

from db_kit.config import DatabaseConfig
from db_kit.engine import build_admin_engine
from db_kit.errors import first_line, sqlstate, translate, translating
from db_kit.migrations.env import configure_options, lock_key, migration_lock
from db_kit.migrations.locks import (
    QUERY_CANCELED,
    MigrationLockTimeoutError,
    set_migration_timeouts,
    with_lock_retries,
)
from db_kit.migrations.shadow import shadow_database
from db_kit.settings import DatabaseSettings
from db_kit.sql import quote_identifier
from db_shared.errors import (
    ConfigurationError,
    DatabaseError,
    IntegrityViolationError,
    InvalidDataError,
)

Heads = tuple[str, ...]
FILE_TEMPLATE = "%%(year)d%%(month).2d%%(day).2d_%%(hour).2d%%(minute).2d_%%(rev)s_%%(slug)s"


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revision: str | None
    message: str
    is_current: bool
    is_head: bool


@dataclass(frozen=True)
class Status:
    """Where a database stands against its migration files.

    ``unmigrated``: model changes no revision has (models vs the schema the migrations
    build in a shadow database). ``diverged``: how the database, at head, differs from what
    its migrations build (pushed or changed by hand). ``drift`` is both together.
    ``shadow_error`` says why the migrations could not be built (then ``drift`` compares the
    database with the models, the best that can be done without a shadow).
    """

    current: tuple[str, ...]
    heads: tuple[str, ...]
    pending: tuple[Revision, ...]
    drift: tuple[str, ...]
    unmigrated: tuple[str, ...] = ()
    diverged: tuple[str, ...] = ()
    shadow_error: str | None = None

    @property
    def up_to_date(self) -> bool:
        return not self.pending and set(self.current) == set(self.heads)


@dataclass(frozen=True)
class ResetReport:
    """What ``reset`` dropped and rebuilt."""

    schema: str
    tenants_rebuilt: tuple[str, ...] = ()
    tenants_failed: tuple[str, ...] = ()
    unregistered_schemas: tuple[str, ...] = ()


class RevisionFailedError(DatabaseError):
    """A revision raised: its transaction was rolled back; the message names it."""

    def __init__(self, message: str, revision: str | None = None) -> None:
        self.revision = revision
        super().__init__(message)


class ProductionGuardError(ConfigurationError):
    """A development-only command was asked to run with ENVIRONMENT=production."""


class DriftError(ConfigurationError):
    """The models describe a schema the migrations do not produce."""

    def __init__(self, database: str, diffs: list[str]) -> None:
        self.diffs = diffs
        listed = "\n  ".join(diffs[:20])
        super().__init__(
            f"The {database} models and the schema its migrations build disagree; refusing to "
            f"deploy.\n  {listed}\n"
            f"Generate a revision (`db {database} generate -m '...'`), review it, and commit it."
        )


def describe_diff(diff: Any) -> str:
    """One readable line for an autogenerate diff entry."""
    if isinstance(diff, list):
        return "; ".join(describe_diff(d) for d in diff)
    if isinstance(diff, tuple) and diff:
        kind = diff[0]
        rest = [
            getattr(x, "name", None) or getattr(x, "fullname", None) or repr(x) for x in diff[1:]
        ]
        if kind.startswith("modify_"):
            # (kind, schema, table, column, info, old, new)
            return f"{kind} {diff[2]}.{diff[3]}: {diff[5]!r} -> {diff[6]!r}"
        return f"{kind} {' '.join(str(r) for r in rest if r not in (None, 'None'))}"
    return repr(diff)


class Migrator:
    """Alembic operations bound to one database and one URL."""

    def __init__(
        self,
        db: DatabaseConfig,
        url: URL | None = None,
        *,
        settings: DatabaseSettings | None = None,
    ) -> None:
        self.db = db
        self.settings = db.settings() if settings is None else settings
        self._url = url
        if self.settings.pgbouncer and url is None and settings is None:
            # Session-level advisory locks and one-transaction-per-tenant need one server
            # connection for the whole run; a transaction pooler does not give that.
            raise ConfigurationError(
                f"{self.settings.url_variable} goes through PgBouncer "
                f"({type(self.settings).__name__}.pgbouncer is on): migrations must connect to "
                "PostgreSQL directly. Run them with the direct server URL and pgbouncer off."
            )

    @classmethod
    def offline(cls, db: DatabaseConfig) -> Migrator:
        """A migrator for offline scripts only (``upgrade_sql``, ``downgrade_sql``, ``merge``):
        no URL is needed, so an unset one (production) is no error here."""
        try:
            return cls(db)
        except ConfigurationError as exc:
            from db_kit.settings import dotenv_path

            env_file = dotenv_path()
            try:
                settings = db.settings_class(_env_file=env_file if env_file.exists() else None)
            except Exception:
                raise exc from None
            return cls(db, settings=settings)

    @property
    def url(self) -> URL:
        if self._url is None:
            self._url = self.settings.resolved_url()
        return self._url

    def alembic_config(self, connection: Connection | None = None) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(self.db.migrations_dir))
        cfg.set_main_option("file_template", FILE_TEMPLATE)
        cfg.set_main_option("timezone", "UTC")
        cfg.set_section_option("post_write_hooks", "hooks", "ruff_fix, ruff_format")
        cfg.set_section_option("post_write_hooks", "ruff_fix.type", "module")
        cfg.set_section_option("post_write_hooks", "ruff_fix.module", "ruff")
        cfg.set_section_option(
            "post_write_hooks",
            "ruff_fix.options",
            "check --fix --select I --quiet REVISION_SCRIPT_FILENAME",
        )
        cfg.set_section_option("post_write_hooks", "ruff_format.type", "module")
        cfg.set_section_option("post_write_hooks", "ruff_format.module", "ruff")
        cfg.set_section_option(
            "post_write_hooks", "ruff_format.options", "format --quiet REVISION_SCRIPT_FILENAME"
        )
        cfg.attributes["database_config"] = self.db
        if connection is not None:
            cfg.attributes["connection"] = connection
        return cfg

    @property
    def script(self) -> ScriptDirectory:
        return ScriptDirectory.from_config(self.alembic_config())

    def engine(self) -> Engine:
        return build_admin_engine(self.settings, self.url)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A pool-less connection with the migration timeouts set (``db_kit.migrations.locks``);
        connection failures become ``DatabaseUnavailableError``."""
        engine = self.engine()
        try:
            with translating(url=self.url):
                conn = engine.connect()
            with conn:
                set_migration_timeouts(conn, self.settings)
                yield conn
        finally:
            engine.dispose()

    # reading -------------------------------------------------------------------------

    def current(self, conn: Connection) -> tuple[str, ...]:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "version_table": self.db.version_table,
                "version_table_schema": self.db.version_table_schema,
            },
        )
        return tuple(ctx.get_current_heads())

    def heads(self) -> tuple[str, ...]:
        return tuple(self.script.get_heads())

    def history(self, conn: Connection | None = None) -> list[Revision]:
        current = set(self.current(conn)) if conn is not None else set()
        heads = set(self.heads())
        return [
            Revision(
                revision=s.revision,
                down_revision=_down(s),
                message=s.doc or "",
                is_current=s.revision in current,
                is_head=s.revision in heads,
            )
            for s in self.script.walk_revisions()
        ]

    def pending(self, conn: Connection) -> list[Revision]:
        current = self.current(conn)
        lower = current[0] if len(current) == 1 else "base"
        revisions: list[Script] = [
            s
            for s in self.script.iterate_revisions("heads", lower)
            if s is not None and s.revision not in current
        ]
        return [
            Revision(s.revision, _down(s), s.doc or "", False, s.is_head)
            for s in reversed(revisions)
        ]

    def drift(self, conn: Connection, metadata: MetaData | None = None) -> list[str]:
        """Differences between ``metadata`` (default: the models) and this connection's schema."""
        ctx = MigrationContext.configure(conn, opts=configure_options(self.db))
        target = self.db.metadata if metadata is None else metadata
        return [describe_diff(d) for d in compare_metadata(ctx, target)]

    @contextmanager
    def shadow(self) -> Iterator[Connection]:
        """A connection to a shadow database holding exactly what the migrations build."""
        with shadow_database(self.settings, self.url) as url:
            built = Migrator(self.db, url)
            with built.connect() as conn:
                command.upgrade(built.alembic_config(conn), "head")
                yield conn

    def migrations_metadata(self, conn: Connection) -> MetaData:
        """The schema a shadow connection holds, reflected (the version table left out)."""
        metadata = MetaData()
        for schema in self.db.schemas or (None,):
            metadata.reflect(bind=conn, schema=schema)
        version = self.db.version_table
        if self.db.version_table_schema:
            version = f"{self.db.version_table_schema}.{version}"
        if version in metadata.tables:
            metadata.remove(metadata.tables[version])
        conn.rollback()
        return metadata

    def unmigrated(self) -> list[str]:
        """Model changes the migration files lack (models vs a shadow built from them).

        An empty list means the migrations produce exactly the schema the models describe.
        """
        with self.shadow() as conn:
            return self.drift(conn)

    def status(self) -> Status:
        unmigrated: list[str] = []
        built: MetaData | None = None
        shadow_error: str | None = None
        try:
            with self.shadow() as conn:
                unmigrated = self.drift(conn)
                built = self.migrations_metadata(conn)
        except ConfigurationError as exc:
            shadow_error = str(exc)
        with self.connect() as conn:
            pending = self.pending(conn)
            current = self.current(conn)
            diverged: list[str] = []
            drift: list[str] = list(unmigrated)
            if not pending:
                if built is not None:
                    diverged = self.drift(conn, built)
                    drift += diverged
                else:
                    drift = self.drift(conn)
            conn.rollback()
        return Status(
            current, self.heads(), tuple(pending), tuple(drift), tuple(unmigrated),
            tuple(diverged), shadow_error,
        )  # fmt: skip

    @contextmanager
    def _locked(self) -> Iterator[Connection]:
        # The lock covers reading the "before" revision too, so a deploy that waited for
        # another one reports "nothing to do" rather than a change it did not make.
        with (
            self.connect() as conn,
            migration_lock(conn, lock_key(self.db.version_table, self.db.version_table_schema)),
        ):
            yield conn

    def _failing(self, conn: Connection, upgrade: bool) -> tuple[str | None, str]:
        """(revision, "revision X (message)") of the revision a failed move stopped at."""
        if conn.in_transaction():
            conn.rollback()
        try:
            if upgrade:
                pending = self.pending(conn)
                rev = pending[0] if pending else None
                found = (rev.revision, rev.message) if rev else None
            else:
                current = self.current(conn)
                script = self.script.get_revision(current[0]) if current else None
                found = (script.revision, script.doc or "") if script else None
        except Exception:  # the database may be gone: name what can be named
            found = None
        finally:
            if conn.in_transaction():
                conn.rollback()
        if found is None:
            return None, f"{self.db.name}: a revision"
        return found[0], f"{self.db.name} revision {found[0]} ({found[1]!r})"

    def _move(
        self, conn: Connection, fn: Any, target: str
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        before = self.current(conn)
        conn.rollback()
        upgrade = fn is command.upgrade

        def attempt() -> None:
            fn(self.alembic_config(conn), target)

        try:
            with_lock_retries(
                attempt,
                conn=conn,
                url=self.url,
                settings=self.settings,
                what=lambda: self._failing(conn, upgrade)[1],
            )
        except (MigrationLockTimeoutError, CommandError):
            raise
        except Exception as exc:
            if isinstance(exc, DatabaseError) and not isinstance(exc, RevisionFailedError):
                raise
            mapped = translate(exc, url=self.url)
            if mapped is not None and not isinstance(mapped, _REVISION_ERRORS):
                raise mapped from exc  # the server went away, not the revision
            revision, named = self._failing(conn, upgrade)
            now = _revs(self.current(conn))
            conn.rollback()
            raise RevisionFailedError(
                f"{named} failed: {_reason(exc, self.settings)}. Its transaction was rolled "
                f"back; {self.db.name} stays at {now}.",
                revision,
            ) from exc
        after = self.current(conn)
        conn.rollback()
        return before, after

    # writing -------------------------------------------------------------------------

    def upgrade(self, target: str = "head") -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Upgrade under the advisory lock; returns (revisions before, revisions after)."""
        with self._locked() as conn:
            return self._move(conn, command.upgrade, target)

    def deploy(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Production upgrade: refuse when the models differ from what the migration files
        build (in a shadow database, never this one), then upgrade."""
        diffs = self.unmigrated()
        if diffs:
            raise DriftError(self.db.name, diffs)
        with self._locked() as conn:
            return self._move(conn, command.upgrade, "head")

    def downgrade(self, target: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        self.guard_development("downgrade")
        with self._locked() as conn:
            return self._move(conn, command.downgrade, target)

    # offline (--sql): the script Alembic would run, written out, nothing applied ------

    def _offline(self, fn: Callable[..., None], revision: str) -> str:
        """The SQL ``fn`` (``command.upgrade``/``downgrade``) would run, from Alembic's
        offline mode: no connection is opened; the script starts with the migration
        timeouts (``env.run_env``)."""
        buffer = io.StringIO()
        cfg = self.alembic_config()
        cfg.output_buffer = buffer
        cfg.attributes["settings"] = self.settings
        fn(cfg, revision, sql=True)
        return buffer.getvalue()

    def upgrade_sql(self, target: str = "head", start: str | None = None) -> str:
        """Offline upgrade script from ``start`` (default: an empty database) to ``target``."""
        return self._offline(command.upgrade, f"{start}:{target}" if start else target)

    def downgrade_sql(self, revision_range: str) -> str:
        """Offline downgrade script for ``FROM:TO`` (offline mode cannot read the current
        revision, so Alembic needs both ends)."""
        if ":" not in revision_range:
            raise CommandError(
                f"An offline (--sql) downgrade needs a FROM:TO range of revision ids, e.g. "
                f"`db {self.db.name} downgrade --sql 1a2b3c:base` (not {revision_range!r}): "
                "without a database the current revision is unknown"
            )
        return self._offline(command.downgrade, revision_range)

    # repairs -------------------------------------------------------------------------

    def resolve(self, revision: str) -> tuple[str, ...]:
        """Revision ids ``revision`` names (``heads``, ``base``, an id or a prefix);
        ``CommandError`` for a name no revision has."""
        if revision in ("base", ""):
            return ()
        try:
            scripts = self.script.get_revisions(revision)
        except RevisionError as exc:
            raise CommandError(f"{self.db.name}: {exc}") from exc
        found = tuple(s.revision for s in scripts if s is not None)
        if not found:
            raise CommandError(f"{self.db.name}: no revision {revision!r}")
        return found

    def stamp(self, revision: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Record ``revision`` in the version table without running any migration (a
        repair: after applying a revision's SQL by hand, or adopting an existing schema).
        Under the migration advisory lock; returns (revisions before, after)."""
        self.resolve(revision)
        with self._locked() as conn:
            before = self.current(conn)
            conn.rollback()
            command.stamp(self.alembic_config(conn), revision)
            after = self.current(conn)
            conn.rollback()
        return before, after

    def merge(self, message: str) -> Script:
        """A revision merging every head into one (no database needed)."""
        heads = self.heads()
        if len(heads) < 2:
            raise ConfigurationError(
                f"{self.db.name} has {len(heads)} head ({_revs(heads)}); nothing to merge."
            )
        result = command.merge(self.alembic_config(), "heads", message=message)
        assert isinstance(result, Script)
        return result

    def generate(self, message: str) -> Script | None:
        """Autogenerate a revision from the models against a shadow database built from the
        migration files; None when there is nothing to write."""
        with self.shadow() as conn:
            cfg = self.alembic_config(conn)
            result = command.revision(cfg, message=message, autogenerate=True)
            conn.rollback()
        if cfg.attributes.get("empty_autogenerate"):
            return None
        return result if isinstance(result, Script) else None

    def create(self, message: str) -> Script:
        result = command.revision(self.alembic_config(), message=message)
        assert isinstance(result, Script)
        return result

    def reset(self) -> ResetReport:
        """Drop what this migration stream owns and migrate it from scratch.

        A stream owns the schema its version table lives in: the registry its own schema,
        a database's main stream the default schema and, with schema-per-tenant, every
        registered tenant's schema (dropped and left empty here; the registry rows stay:
        ``SchemaTenantMigrator.reset`` migrates them again).
        """
        self.guard_development("reset")
        tenants: list[str] = []
        with self._locked() as conn:
            schema = self.db.version_table_schema or str(
                conn.execute(text("SELECT current_schema()")).scalar_one()
            )
            tenancy = self.db.tenancy
            if tenancy is not None:
                table = tenancy.model.__table__  # type: ignore[attr-defined]
                if inspect(conn).has_table(table.name, schema=table.schema):
                    # Those on this server (a fleet's other servers: SchemaTenantMigrator).
                    model = tenancy.model
                    home = self.settings.home_server() if self.settings.servers else None
                    placed_here: ColumnElement[bool] = model.server.is_(None)
                    if home is not None:
                        placed_here = placed_here | (model.server == home)
                    tenants = list(
                        conn.execute(select(model.schema_name).where(placed_here)).scalars()
                    )
            for name in [schema, *tenants]:
                conn.execute(text(f"DROP SCHEMA IF EXISTS {quote_identifier(name)} CASCADE"))
                conn.execute(text(f"CREATE SCHEMA {quote_identifier(name)}"))
            conn.commit()
        self.upgrade("head")
        unregistered: list[str] = []
        owner = self.db.registry_of  # set when this stream is a database's tenant registry
        if owner is not None and owner.tenancy is not None:
            with self.connect() as conn:
                unregistered = list(
                    conn.execute(
                        text("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, :p) "
                             "ORDER BY 1"),
                        {"p": owner.tenancy.schema_prefix},
                    ).scalars()
                )  # fmt: skip
        return ResetReport(schema, unregistered_schemas=tuple(unregistered))

    def push(self) -> list[str]:
        """Apply the model changes directly, without a revision (prototyping only)."""
        self.guard_development("push")
        with (
            self.connect() as conn,
            migration_lock(conn, lock_key(self.db.version_table, self.db.version_table_schema)),
        ):
            ctx = MigrationContext.configure(conn, opts=configure_options(self.db))
            script = produce_migrations(ctx, self.db.metadata)
            ops = Operations(ctx)
            applied: list[str] = []
            assert script.upgrade_ops is not None
            stack: list[Any] = list(script.upgrade_ops.ops)
            while stack:
                elem = stack.pop(0)
                if hasattr(elem, "ops"):
                    stack[:0] = list(elem.ops)
                    continue
                ops.invoke(elem)
                applied.append(type(elem).__name__)
            conn.commit()
        return applied

    def guard_development(self, action: str) -> None:
        if self.settings.is_production:
            raise ProductionGuardError(
                f"Refusing `db {self.db.name} {action}`: {self.settings.environment_label}. It "
                "is a development command that can lose data; ship a new revision instead (or "
                "choose development explicitly: ENVIRONMENT=development)."
            )


def _down(script: Script) -> str | None:
    down = script.down_revision
    if isinstance(down, tuple | list):
        return ",".join(down)
    return down


# Errors a revision's own SQL causes (a bad value, a violated constraint): reported as the
# revision's failure, not translated into an application error.
_REVISION_ERRORS = (InvalidDataError, IntegrityViolationError)


def _revs(revs: tuple[str, ...]) -> str:
    return ", ".join(revs) if revs else "(empty database)"


def _reason(exc: BaseException, settings: Any) -> str:
    """One line: the driver's reason, with the setting to raise for a statement timeout."""
    reason = first_line(exc)
    if sqlstate(exc) == QUERY_CANCELED and "statement timeout" in reason:
        prefix = str(settings.model_config.get("env_prefix", "")).upper()
        reason += (
            f" (after {settings.migration_statement_timeout_ms} ms; raise "
            f"{prefix}MIGRATION_STATEMENT_TIMEOUT_MS for long migrations, 0 for no limit)"
        )
    return reason
