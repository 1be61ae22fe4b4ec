"""Migration operations on one database: what the ``db`` CLI and the tests call."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata, produce_migrations
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL

from db_kit.alembic_env import configure_options, lock_key, migration_lock
from db_kit.config import DatabaseConfig
from db_kit.engine import build_admin_engine
from db_kit.errors import translate
from db_shared.errors import ConfigurationError, NotFoundError

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
    current: tuple[str, ...]
    heads: tuple[str, ...]
    pending: tuple[Revision, ...]
    drift: tuple[str, ...]

    @property
    def up_to_date(self) -> bool:
        return not self.pending and set(self.current) == set(self.heads)


class ProductionGuardError(ConfigurationError):
    """A development-only command was asked to run with ENVIRONMENT=production."""


class DriftError(ConfigurationError):
    """The models describe a schema the migrations do not produce."""

    def __init__(self, database: str, diffs: list[str]) -> None:
        self.diffs = diffs
        listed = "\n  ".join(diffs[:20])
        super().__init__(
            f"The {database} models and migrations disagree; refusing to deploy.\n  {listed}\n"
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

    def __init__(self, db: DatabaseConfig, url: URL | None = None) -> None:
        self.db = db
        self.settings = db.settings()
        self._url = url
        if self.settings.pgbouncer and url is None:
            # Session-level advisory locks and one-transaction-per-tenant need one server
            # connection for the whole run; a transaction pooler does not give that.
            raise ConfigurationError(
                f"{self.settings.url_variable} goes through PgBouncer "
                f"({type(self.settings).__name__}.pgbouncer is on): migrations must connect to "
                "PostgreSQL directly. Run them with the direct server URL and pgbouncer off."
            )

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
        """A pool-less connection; connection failures become ``DatabaseUnavailableError``."""
        engine = self.engine()
        try:
            try:
                conn = engine.connect()
            except Exception as exc:
                mapped = translate(exc, url=self.url)
                if mapped is None:
                    raise
                raise mapped from exc
            with conn:
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

    def drift(self, conn: Connection) -> list[str]:
        """Differences between the models and this database's current schema."""
        ctx = MigrationContext.configure(conn, opts=configure_options(self.db))
        return [describe_diff(d) for d in compare_metadata(ctx, self.db.metadata)]

    def status(self) -> Status:
        with self.connect() as conn:
            pending = self.pending(conn)
            current = self.current(conn)
            drift = self.drift(conn) if not pending else []
            conn.rollback()
        return Status(current, self.heads(), tuple(pending), tuple(drift))

    def _models_match_migrations(self, conn: Connection) -> list[str]:
        trans = conn.begin()
        try:
            command.upgrade(self.alembic_config(conn), "head")
            return self.drift(conn)
        finally:
            trans.rollback()

    def models_match_migrations(self) -> list[str]:
        """Apply pending revisions in a transaction that is rolled back, then compare.

        An empty list means the migrations produce exactly the schema the models describe.
        """
        with self.connect() as conn:
            return self._models_match_migrations(conn)

    @contextmanager
    def _locked(self) -> Iterator[Connection]:
        # The lock covers reading the "before" revision too, so a deploy that waited for
        # another one reports "nothing to do" rather than a change it did not make.
        with (
            self.connect() as conn,
            migration_lock(conn, lock_key(self.db.version_table, self.db.version_table_schema)),
        ):
            yield conn

    def _move(
        self, conn: Connection, fn: Any, target: str
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        before = self.current(conn)
        conn.rollback()
        fn(self.alembic_config(conn), target)
        after = self.current(conn)
        conn.rollback()
        return before, after

    # writing -------------------------------------------------------------------------

    def upgrade(self, target: str = "head") -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Upgrade under the advisory lock; returns (revisions before, revisions after)."""
        with self._locked() as conn:
            return self._move(conn, command.upgrade, target)

    def deploy(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Production upgrade: refuse when models and migrations disagree, then upgrade."""
        with self._locked() as conn:
            diffs = self._models_match_migrations(conn)
            if diffs:
                raise DriftError(self.db.name, diffs)
            return self._move(conn, command.upgrade, "head")

    def downgrade(self, target: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        self.guard_development("downgrade")
        with self._locked() as conn:
            return self._move(conn, command.downgrade, target)

    def generate(self, message: str) -> Script | None:
        """Autogenerate a revision from the models; None when there is nothing to write."""
        with self.connect() as conn:
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

    def reset(self) -> None:
        """Drop every object of the database's ``public`` schema and migrate to head."""
        self.guard_development("reset")
        with self._locked() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
            tenancy = self.db.tenancy
            if tenancy is not None:
                # Tenant schemas and the registry go too: they describe what was dropped.
                schemas = conn.execute(
                    text(
                        "SELECT nspname FROM pg_namespace "
                        "WHERE starts_with(nspname, :prefix) OR nspname = :registry"
                    ),
                    {
                        "prefix": tenancy.schema_prefix,
                        "registry": tenancy.registry.version_table_schema,
                    },
                ).scalars()
                for schema in list(schemas):
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            conn.commit()
        if self.db.tenancy is not None:
            Migrator(self.db.tenancy.registry, self.url).upgrade("head")
        self.upgrade("head")

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

    def seed(self, tenant: str | None = None) -> str | None:
        """Run the db lib's seed in one transaction; returns its note for the operator.

        ``tenant``: seed that tenant's schema (schema-per-tenant databases).
        """
        fn = self.db.seed_function()
        if fn is None:
            raise ConfigurationError(f"The {self.db.name} database defines no seed function.")
        schema = None
        if tenant is not None:
            if self.db.tenancy is None:
                raise ConfigurationError(f"The {self.db.name} database has no tenant schemas.")
            schema = self.db.tenancy.schema_for(tenant)  # validated before any SQL
        from sqlalchemy.orm import Session

        with self.connect() as raw:
            conn = raw
            if schema is not None:
                found = raw.execute(
                    text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}
                ).first()
                raw.rollback()
                if found is None:
                    raise NotFoundError("tenant", tenant)
                conn = raw.execution_options(schema_translate_map={None: schema})
            with Session(bind=conn) as session:
                note = fn(session)
                session.commit()
            raw.commit()
        return note

    def guard_development(self, action: str) -> None:
        if self.settings.is_production:
            raise ProductionGuardError(
                f"Refusing `db {self.db.name} {action}`: ENVIRONMENT=production. It is a "
                "development command that can lose data; ship a new revision instead."
            )


def _down(script: Script) -> str | None:
    down = script.down_revision
    if isinstance(down, tuple | list):
        return ",".join(down)
    return down
