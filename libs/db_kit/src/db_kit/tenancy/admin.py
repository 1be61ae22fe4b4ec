"""Tenant lifecycle over a registry, the same in both tenancy modes: suspend, reactivate,
rename, clone from a template, plugins, domains, super admins, and the audit of it all.

``TenantAdmin(config, actor="cli:alice")`` works on the registry of a schema-per-tenant
(core: ``core.tenants``) or database-per-tenant (bibikos: ``control.tenants``) library.
Every change writes a ``tenant_audit`` row naming ``actor``, in the same transaction as the
change where the change is registry rows only. The registry's triggers NOTIFY every worker
(``db_kit.tenancy.registry``), so a suspension is refused everywhere at once.

The CLI (``db NAME tenants ...``) and the super-admin API (``api_kit.admin``) both call it;
it is synchronous (an API runs it in a worker thread) and opens one pool-less connection per
operation, with the migration timeouts set, so a locked registry row fails fast.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import Connection, Engine, Table, TextClause, delete, insert, select, text, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError

from db_kit.config import DatabaseConfig
from db_kit.errors import sqlstate, translating
from db_kit.sql import quote_identifier
from db_kit.tenancy.registry import (
    PluginMixin,
    SuperAdminMixin,
    TenantAuditMixin,
    TenantDomainMixin,
    TenantPluginMixin,
    TenantStatus,
)
from db_shared.errors import (
    ConfigurationError,
    ConflictError,
    DuplicateEntryError,
    InvalidInputError,
    NotFoundError,
)
from db_shared.tenancy import validate_tenant_slug

__all__ = [
    "ADMIN_TOKEN_PREFIX",
    "DEFAULT_SERVER",
    "AuditEntry",
    "SuperAdminInfo",
    "TenantAdmin",
    "TenantInfo",
    "hash_admin_token",
]

# The name shown for a tenant without a placement when the settings name no home server
# (the main URL's server is ``main`` unless <PREFIX>SERVERS names it).
DEFAULT_SERVER = "main"
ADMIN_TOKEN_PREFIX = "sa_"  # noqa: S105 (a prefix that makes leaked tokens greppable)
_DOMAIN = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))+")
_PLUGIN_ID = re.compile(r"[a-z][a-z0-9_.-]{0,99}")
_EMAIL = re.compile(r"[^@\s]{1,200}@[^@\s]{1,119}")


def hash_admin_token(token: str) -> str:
    """What the registry keeps of an admin token: its SHA-256 (the token has 256 random
    bits, so a plain digest cannot be reversed by guessing)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class TenantInfo:
    """One tenant as the registry knows it."""

    slug: str
    name: str
    status: str
    region: str | None
    # Where its data lives: the schema (schema-per-tenant) or the database name.
    location: str
    # The server that holds it (a name of <PREFIX>SERVERS; the home server when unplaced).
    server: str
    revision: str | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    domains: tuple[str, ...] = ()
    plugins: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    tenant: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class SuperAdminInfo:
    email: str
    external_id: str
    has_token: bool
    created_at: datetime


def _mapped(config: DatabaseConfig, mixin: type) -> Any:
    """The registry's concrete model composing ``mixin`` (ConfigurationError if none)."""
    for mapper in config.base.registry.mappers:
        if issubclass(mapper.class_, mixin):
            return mapper.class_
    raise ConfigurationError(
        f"The {config.name} registry models have no class composing {mixin.__name__}."
    )


def normalise_domain(value: str) -> str:
    """A host name as the registry stores it: lower-case, no port, no trailing dot."""
    domain = value.strip().lower().removesuffix(".")
    if len(domain) > 253 or not _DOMAIN.fullmatch(domain):
        raise InvalidInputError(
            "invalid_domain",
            f"{value[:80]!r} is not a host name such as app.example.com (letters, digits and "
            "hyphens in dot-separated labels, no port, no scheme).",
            fields=("domain",),
        )
    return domain


class TenantAdmin:
    """Lifecycle operations on one library's tenant registry, each audited as ``actor``."""

    def __init__(
        self,
        db: DatabaseConfig,
        *,
        actor: str,
        url: URL | None = None,
        engine: Engine | None = None,
    ) -> None:
        """``engine``: a pooled sync engine of the registry's database to borrow connections
        from (an app passes its own, so a request opens no engine); without it each
        operation opens one pool-less connection to ``url`` (the CLI)."""
        registry = db.registry
        if registry is None:
            raise ConfigurationError(
                f"The {db.name} database has no tenant registry: tenant lifecycle needs one."
            )
        if not actor.strip():
            raise ValueError("every registry change needs an actor to record")
        self.db = db
        self.registry = registry
        self.actor = actor.strip()[:320]
        self.url = url if url is not None or engine is None else engine.url
        self.engine = engine
        self.schema_mode = db.tenancy is not None
        self.Tenant: Any = db.registry_model
        self.Domain: Any = _mapped(registry, TenantDomainMixin)
        self.Plugin: Any = _mapped(registry, PluginMixin)
        self.TenantPlugin: Any = _mapped(registry, TenantPluginMixin)
        self.SuperAdmin: Any = _mapped(registry, SuperAdminMixin)
        self.Audit: Any = _mapped(registry, TenantAuditMixin)

    @cached_property
    def home_server(self) -> str:
        """The name of the server holding the registry (shown for unplaced tenants)."""
        try:
            return self.db.settings().home_server() or DEFAULT_SERVER
        except ConfigurationError:
            return DEFAULT_SERVER

    # plumbing ------------------------------------------------------------------------

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A registry connection with the migration lock and statement timeouts set, so a
        locked tenant row fails fast instead of hanging a request."""
        with self._connection() as conn:
            tenants: Table = self.Tenant.__table__
            ready = conn.dialect.has_table(conn, tenants.name, schema=tenants.schema)
            conn.rollback()  # end the catalog query's implicit transaction
            if not ready:
                raise ConfigurationError(
                    f"The {self.db.name} tenant registry is not migrated yet: run "
                    f"`db {self.db.name} migrate` (development) or "
                    f"`db {self.db.name} registry deploy`."
                )
            yield conn

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        from db_kit.migrations.migrator import Migrator

        if self.engine is None:
            with Migrator(self.registry, self.url).connect() as conn:
                yield conn
            return
        settings = self.registry.settings()
        with translating(url=self.engine.url):
            conn = self.engine.connect()
        with conn:
            conn.execute(
                text("SELECT set_config('lock_timeout', :lock, false), "
                     "set_config('statement_timeout', :stmt, false)"),
                {"lock": f"{settings.migration_lock_timeout_ms}ms",
                 "stmt": f"{settings.migration_statement_timeout_ms}ms"},
            )  # fmt: skip
            conn.commit()
            try:
                yield conn
            finally:
                # The connection goes back to the app's pool: no timeout of ours stays on it.
                try:
                    if conn.in_transaction():
                        conn.rollback()
                    conn.exec_driver_sql("RESET lock_timeout")
                    conn.exec_driver_sql("RESET statement_timeout")
                    conn.commit()
                except Exception:
                    conn.invalidate()  # not returned to the pool with our settings on it

    def _audit(self, conn: Connection, action: str, tenant: str | None, **detail: Any) -> None:
        conn.execute(
            insert(self.Audit).values(
                actor=self.actor, action=action, tenant_slug=tenant, detail=detail
            )
        )

    def _tenant_row(self, conn: Connection, slug: str, *, lock: bool = False) -> Any:
        t = self.Tenant
        location = t.schema_name if self.schema_mode else t.database_name
        query = select(
            t.id, t.slug, t.name, t.status, t.region, location.label("location"), t.server,
            t.revision, t.last_error, t.created_at, t.updated_at,
        ).where(t.slug == validate_tenant_slug(slug))  # fmt: skip
        if lock:
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise NotFoundError("tenant", slug)
        return row

    def _info(self, conn: Connection, row: Any) -> TenantInfo:
        domains = conn.execute(
            select(self.Domain.domain)
            .where(self.Domain.tenant_id == row.id)
            .order_by(self.Domain.is_primary.desc(), self.Domain.domain)
        ).scalars()
        plugins = conn.execute(
            select(self.TenantPlugin.plugin_id, self.TenantPlugin.enabled)
            .where(self.TenantPlugin.tenant_id == row.id)
            .order_by(self.TenantPlugin.plugin_id)
        ).all()
        return TenantInfo(
            slug=row.slug, name=row.name, status=row.status, region=row.region,
            location=row.location, server=row.server or self.home_server, revision=row.revision,
            last_error=row.last_error,
            created_at=row.created_at, updated_at=row.updated_at, domains=tuple(domains),
            plugins=tuple((p, bool(e)) for p, e in plugins),
        )  # fmt: skip

    # reading -------------------------------------------------------------------------

    def tenants(self) -> list[TenantInfo]:
        """Every registered tenant, by slug."""
        t = self.Tenant
        with self.connect() as conn:
            slugs = conn.execute(select(t.slug).order_by(t.slug)).scalars().all()
            return [self._info(conn, self._tenant_row(conn, slug)) for slug in slugs]

    def tenant(self, slug: str) -> TenantInfo:
        with self.connect() as conn:
            return self._info(conn, self._tenant_row(conn, slug))

    def audit(self, slug: str | None = None, *, limit: int = 50) -> list[AuditEntry]:
        """The newest ``limit`` changes (of tenant ``slug`` only, when given)."""
        a = self.Audit
        query = select(a.at, a.actor, a.action, a.tenant_slug, a.detail)
        if slug is not None:
            query = query.where(a.tenant_slug == validate_tenant_slug(slug))
        query = query.order_by(a.at.desc(), a.id.desc()).limit(max(1, min(limit, 1000)))
        with self.connect() as conn:
            return [AuditEntry(*row) for row in conn.execute(query)]

    # status ----------------------------------------------------------------------------

    def _set_status(self, slug: str, to: TenantStatus, action: str, **detail: Any) -> TenantInfo:
        allowed = {
            TenantStatus.SUSPENDED: (TenantStatus.ACTIVE,),
            TenantStatus.ACTIVE: (TenantStatus.SUSPENDED,),
        }[to]
        with self.connect() as conn, conn.begin():
            row = self._tenant_row(conn, slug, lock=True)
            if row.status == to:
                return self._info(conn, row)  # already so: nothing changes, nothing recorded
            if row.status not in allowed:
                raise ConflictError(
                    "tenant_not_ready",
                    f"tenant {slug} is {row.status}, not {allowed[0].value}: finish its "
                    f"provisioning first (`db {self.db.name} tenants migrate --tenant {slug}`).",
                )
            conn.execute(update(self.Tenant).where(self.Tenant.id == row.id).values(status=to))
            self._audit(conn, action, row.slug, **{"from": row.status, **detail})
            return self._info(conn, self._tenant_row(conn, slug))

    def suspend(self, slug: str, reason: str | None = None) -> TenantInfo:
        """Refuse the tenant's requests (403 ``tenant_suspended``) until it is reactivated;
        its data is kept."""
        detail = {"reason": reason[:500]} if reason else {}
        return self._set_status(slug, TenantStatus.SUSPENDED, "suspend", **detail)

    def reactivate(self, slug: str) -> TenantInfo:
        """Serve a suspended tenant again."""
        return self._set_status(slug, TenantStatus.ACTIVE, "reactivate")

    # rename ----------------------------------------------------------------------------

    def rename(self, slug: str, new_slug: str) -> TenantInfo:
        """Give the tenant a new slug; its data is kept.

        Schema-per-tenant: the schema is renamed with it (``ALTER SCHEMA ... RENAME``, a
        catalog change) in the same transaction, so routing by slug finds it. Database-per-
        tenant: the database keeps its name; the registry row maps the new slug to it.
        """
        new_slug = validate_tenant_slug(new_slug)
        elsewhere = self.schema_mode and self.tenant(slug).server != self.home_server
        with self.connect() as conn, conn.begin():
            row = self._tenant_row(conn, slug, lock=True)
            if new_slug == row.slug:
                return self._info(conn, row)
            values: dict[str, Any] = {"slug": new_slug}
            if self.schema_mode:
                assert self.db.tenancy is not None
                values["schema_name"] = self.db.tenancy.schema_for(new_slug)
            try:
                with conn.begin_nested():
                    conn.execute(update(self.Tenant).where(self.Tenant.id == row.id).values(values))
                    if self.schema_mode and not elsewhere:
                        conn.execute(_rename_schema(row.location, values["schema_name"]))
                if elsewhere:
                    # The schema lives on another server: renamed there first (its own
                    # transaction), back again when the registry's commit fails.
                    self._rename_on_server(row, values["schema_name"])
            except IntegrityError as exc:
                if sqlstate(exc) == "23505":
                    raise DuplicateEntryError(
                        table="tenants",
                        columns=("slug",),
                        message=f"tenant {new_slug} already exists; pick another slug.",
                    ) from None
                raise
            except Exception as exc:
                if sqlstate(exc) == "42P06" or sqlstate(exc.__cause__ or exc) == "42P06":
                    raise DuplicateEntryError(
                        table="tenants",
                        columns=("slug",),
                        message=f"a schema named {values['schema_name']} already exists (not a "
                        "registered tenant's); drop it or pick another slug.",
                    ) from None
                raise
            self._audit(conn, "rename", new_slug, **{"from": row.slug, "to": new_slug})
            try:
                return self._info(conn, self._tenant_row(conn, new_slug))
            except BaseException:
                if elsewhere:
                    self._rename_on_server(row, row.location, current=values["schema_name"])
                raise

    def _rename_on_server(self, row: Any, new: str, *, current: str | None = None) -> None:
        from db_kit.migrations.schema_tenants import SchemaTenantMigrator

        migrator = SchemaTenantMigrator(self.db, self.url)
        with migrator.connect_server(row.server) as server, server.begin():
            server.execute(_rename_schema(current or row.location, new))

    # create, clone, drop ---------------------------------------------------------------

    def _record_change(self, action: str, tenant: str | None, **detail: Any) -> None:
        with self.connect() as conn, conn.begin():
            self._audit(conn, action, tenant, **detail)

    def create(
        self,
        slug: str,
        name: str | None = None,
        region: str | None = None,
        *,
        server: str | None = None,
    ) -> TenantInfo:
        """Register and provision a new tenant (schema or database), migrated to head, on
        ``server`` (a name of ``<PREFIX>SERVERS``; None: the placement policy's choice)."""
        slug = validate_tenant_slug(slug)
        if self.schema_mode:
            from db_kit.migrations.schema_tenants import SchemaTenantMigrator

            SchemaTenantMigrator(self.db, self.url).create(slug, name, region, server=server)
        else:
            from db_kit.migrations.database_tenants import TenantDatabaseMigrator

            migrator = TenantDatabaseMigrator(self.db)
            if slug in migrator.registered:
                raise DuplicateEntryError(
                    table="tenants", columns=("slug",), message=f"tenant {slug} already exists."
                )
            migrator.create(slug, name=name, region=region, server=server)
        self._record_change(
            "create", slug, name=name or slug, region=region, server=self.tenant(slug).server
        )
        return self.tenant(slug)

    def drop(self, slug: str, *, force: bool = False) -> None:
        """Drop the tenant's data (schema or database) and its registry row. Irreversible."""
        info = self.tenant(slug)
        if self.schema_mode:
            from db_kit.migrations.schema_tenants import SchemaTenantMigrator

            SchemaTenantMigrator(self.db, self.url).drop(info.slug)
        else:
            from db_kit.migrations.database_tenants import TenantDatabaseMigrator

            TenantDatabaseMigrator(self.db).drop(info.slug, force=force)
        self._record_change("drop", info.slug, location=info.location)

    def clone(
        self, template: str, slug: str, name: str | None = None, region: str | None = None
    ) -> TenantInfo:
        """A new tenant ``slug`` with a copy of ``template``'s data and plugins
        (django-tenants' ``clone_tenant``); domains are not copied.

        The template must be at head (its tables match the new tenant's). Rows are copied
        table by table in foreign-key order, then identity sequences are moved past the
        copied ids. A failed copy leaves no tenant behind.
        """
        slug = validate_tenant_slug(slug)
        source = self.tenant(template)
        started = time.perf_counter()
        if self.schema_mode:
            self._clone_schema(source, slug, name, region)
        else:
            self._clone_database(source, slug, name, region)
        with self.connect() as conn, conn.begin():
            new = self._tenant_row(conn, slug)
            for plugin_id, enabled, configuration in conn.execute(
                select(
                    self.TenantPlugin.plugin_id,
                    self.TenantPlugin.enabled,
                    self.TenantPlugin.configuration,
                ).where(self.TenantPlugin.tenant_id == self._tenant_row(conn, source.slug).id)
            ):
                conn.execute(
                    insert(self.TenantPlugin).values(
                        tenant_id=new.id,
                        plugin_id=plugin_id,
                        enabled=enabled,
                        configuration=configuration,
                    )
                )
            self._audit(
                conn, "clone", slug, template=source.slug,
                seconds=round(time.perf_counter() - started, 3),
            )  # fmt: skip
            return self._info(conn, self._tenant_row(conn, slug))

    def _tenant_tables(self) -> list[Table]:
        return [
            table
            for table in self.db.metadata.sorted_tables
            if table.schema is None and table.name != self.db.version_table
        ]

    def _check_at_head(self, source: TenantInfo) -> None:
        from db_kit.migrations.migrator import Migrator

        heads = Migrator(self.db, self.url).heads()
        if source.revision is None or (source.revision,) != tuple(heads):
            raise ConflictError(
                "template_not_migrated",
                f"template tenant {source.slug} is at {source.revision or 'no revision'}, not "
                f"at head ({', '.join(heads)}): migrate it first "
                f"(`db {self.db.name} tenants migrate --tenant {source.slug}`).",
            )

    def _clone_schema(
        self, source: TenantInfo, slug: str, name: str | None, region: str | None
    ) -> None:
        from db_kit.migrations.schema_tenants import SchemaTenantMigrator, TenantExistsError

        self._check_at_head(source)
        migrator = SchemaTenantMigrator(self.db, self.url)
        assert self.db.tenancy is not None
        target = self.db.tenancy.schema_for(slug)
        if source.server != self.home_server:
            self._clone_schema_elsewhere(migrator, source, slug, target, name, region)
            return
        t = self.Tenant
        with migrator.connect() as conn:
            try:
                with conn.begin():
                    conn.execute(
                        insert(t).values(
                            slug=slug, name=name or slug, schema_name=target,
                            region=region if region is not None else source.region,
                        )
                    )  # fmt: skip
                    conn.execute(text(f"CREATE SCHEMA {quote_identifier(target)}"))
                    after = migrator._upgrade_in_transaction(conn, target)
                    conn.execute(text("SET LOCAL search_path TO DEFAULT"))
                    self._copy_schema_rows(conn, source.location, target)
                    migrator._record(conn, slug, after, None)
            except IntegrityError as exc:
                if sqlstate(exc) == "23505":
                    raise TenantExistsError(
                        table="tenants", columns=("slug",),
                        message=f"tenant {slug} already exists (schema {target}); pick another "
                        "slug.",
                    ) from None  # fmt: skip
                raise

    def _copy_schema_rows(self, conn: Connection, source: str, target: str) -> None:
        """Every tenant table's rows from schema ``source`` into ``target`` (foreign-key
        order), then ``target``'s identity sequences moved past the copied ids."""
        src, dst = quote_identifier(source), quote_identifier(target)
        for table in self._tenant_tables():
            columns = ", ".join(quote_identifier(c.name) for c in table.columns)
            name = quote_identifier(table.name)
            conn.execute(
                text(f"INSERT INTO {dst}.{name} ({columns}) SELECT {columns} FROM {src}.{name}")
            )
        _advance_sequences(conn, target, self._tenant_tables())

    def _clone_schema_elsewhere(
        self, migrator: Any, source: TenantInfo, slug: str, target: str,
        name: str | None, region: str | None,
    ) -> None:  # fmt: skip
        """The clone of a template on another server than the registry's: made there (the
        tenant registered, its schema migrated), then the rows copied in one transaction on
        that server; the new tenant is dropped again when the copy fails."""
        migrator.create(
            slug, name, region if region is not None else source.region, server=source.server
        )
        try:
            with migrator.connect_server(source.server) as conn, conn.begin():
                self._copy_schema_rows(conn, source.location, target)
        except BaseException:
            migrator.drop(slug)
            raise

    def _clone_database(
        self, source: TenantInfo, slug: str, name: str | None, region: str | None
    ) -> None:
        from db_kit.migrations.database_tenants import TenantDatabaseMigrator

        self._check_at_head(source)
        migrator = TenantDatabaseMigrator(self.db)
        if slug in migrator.registered or slug in migrator.static:
            raise DuplicateEntryError(
                table="tenants", columns=("slug",), message=f"tenant {slug} already exists."
            )
        source_url = migrator.url_for(source.slug)
        migrator.create(slug, name=name, region=region if region is not None else source.region)
        target_url = migrator.url_for(slug)
        try:
            _copy_database(source_url, target_url, self._tenant_tables())
        except BaseException:
            migrator.drop(slug, force=True)
            raise

    # plugins ---------------------------------------------------------------------------

    def add_plugin(self, plugin_id: str, name: str, version: str) -> None:
        """Put a plugin in the catalogue (or update its name and version)."""
        if not _PLUGIN_ID.fullmatch(plugin_id):
            raise InvalidInputError(
                "invalid_plugin", f"plugin id {plugin_id[:80]!r}: use a-z, 0-9, _ . - (<=100)."
            )
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        with self.connect() as conn, conn.begin():
            stmt = pg_insert(self.Plugin).values(
                id=plugin_id, name=name[:200], version=version[:50]
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["id"],
                    set_={"name": stmt.excluded.name, "version": stmt.excluded.version},
                )
            )
            self._audit(conn, "plugin_add", None, plugin=plugin_id, version=version[:50])

    def plugins(self) -> list[tuple[str, str, str]]:
        """The catalogue: (id, name, version)."""
        p = self.Plugin
        with self.connect() as conn:
            rows = conn.execute(select(p.id, p.name, p.version).order_by(p.id))
            return [(str(i), str(n), str(v)) for i, n, v in rows]

    def set_plugin(
        self,
        slug: str,
        plugin_id: str,
        *,
        enabled: bool,
        configuration: dict[str, Any] | None = None,
    ) -> TenantInfo:
        """Enable (installing it when new) or disable a catalogue plugin for the tenant."""
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        with self.connect() as conn, conn.begin():
            row = self._tenant_row(conn, slug, lock=True)
            known = conn.execute(select(self.Plugin.id).where(self.Plugin.id == plugin_id)).first()
            if known is None:
                raise NotFoundError("plugin", plugin_id[:100])
            values: dict[str, Any] = {
                "tenant_id": row.id,
                "plugin_id": plugin_id,
                "enabled": enabled,
            }
            if configuration is not None:
                values["configuration"] = configuration
            stmt = pg_insert(self.TenantPlugin).values(values)
            update_set: dict[str, Any] = {"enabled": stmt.excluded.enabled}
            if configuration is not None:
                update_set["configuration"] = stmt.excluded.configuration
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["tenant_id", "plugin_id"], set_=update_set
                )
            )
            self._audit(
                conn, "plugin_enable" if enabled else "plugin_disable", row.slug, plugin=plugin_id
            )
            return self._info(conn, row)

    # domains ---------------------------------------------------------------------------

    def add_domain(self, slug: str, domain: str, *, primary: bool = False) -> TenantInfo:
        """Serve ``domain`` as the tenant (no restart: workers drop their cache on NOTIFY)."""
        host = normalise_domain(domain)
        with self.connect() as conn, conn.begin():
            row = self._tenant_row(conn, slug, lock=True)
            owner = conn.execute(
                select(self.Tenant.slug)
                .join(self.Domain, self.Domain.tenant_id == self.Tenant.id)
                .where(self.Domain.domain == host)
            ).scalar()
            if owner is not None and owner != row.slug:
                raise DuplicateEntryError(
                    table="tenant_domains", columns=("domain",),
                    message=f"domain {host} already serves tenant {owner}; remove it there first.",
                )  # fmt: skip
            if primary:
                conn.execute(
                    update(self.Domain)
                    .where(self.Domain.tenant_id == row.id)
                    .values(is_primary=False)
                )
            if owner is None:
                conn.execute(
                    insert(self.Domain).values(domain=host, tenant_id=row.id, is_primary=primary)
                )
            elif primary:
                conn.execute(
                    update(self.Domain).where(self.Domain.domain == host).values(is_primary=True)
                )
            else:
                return self._info(conn, row)
            self._audit(conn, "domain_add", row.slug, domain=host, primary=primary)
            return self._info(conn, row)

    def remove_domain(self, domain: str) -> str:
        """Stop serving ``domain``; returns the slug it served."""
        host = normalise_domain(domain)
        with self.connect() as conn, conn.begin():
            owner = conn.execute(
                select(self.Tenant.slug)
                .join(self.Domain, self.Domain.tenant_id == self.Tenant.id)
                .where(self.Domain.domain == host)
            ).scalar()
            if owner is None:
                raise NotFoundError("domain", host)
            conn.execute(delete(self.Domain).where(self.Domain.domain == host))
            self._audit(conn, "domain_remove", owner, domain=host)
            return str(owner)

    # super admins ----------------------------------------------------------------------

    def super_admins(self) -> list[SuperAdminInfo]:
        s = self.SuperAdmin
        with self.connect() as conn:
            rows = conn.execute(
                select(s.email, s.external_id, s.token_hash.is_not(None), s.created_at).order_by(
                    s.email
                )
            )
            return [SuperAdminInfo(*row) for row in rows]

    def add_super_admin(self, email: str, external_id: str | None = None) -> str:
        """Add an operator with access to every tenant; returns their admin API token.

        The token is shown this once: the registry keeps only its SHA-256.
        """
        email = email.strip().lower()
        if not _EMAIL.fullmatch(email):
            raise InvalidInputError(
                "invalid_email", "give the admin's e-mail address", fields=("email",)
            )
        token = ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.connect() as conn, conn.begin():
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(self.SuperAdmin).values(
                            email=email, external_id=(external_id or email)[:255],
                            token_hash=hash_admin_token(token),
                        )
                    )  # fmt: skip
            except IntegrityError as exc:
                if sqlstate(exc) == "23505":
                    raise DuplicateEntryError(
                        table="super_admins", columns=("email",),
                        message=f"{email} is already a super admin (rotate the token with "
                        f"`db {self.db.name} admins token {email}`).",
                    ) from None  # fmt: skip
                raise
            self._audit(conn, "admin_add", None, email=email)
        return token

    def rotate_admin_token(self, email: str) -> str:
        """A new API token for the admin; the old one stops working at once."""
        email = email.strip().lower()
        token = ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.connect() as conn, conn.begin():
            done = conn.execute(
                update(self.SuperAdmin)
                .where(self.SuperAdmin.email == email)
                .values(token_hash=hash_admin_token(token))
            )
            if done.rowcount == 0:
                raise NotFoundError("super admin", email)
            self._audit(conn, "admin_token", None, email=email)
        return token

    def remove_super_admin(self, email: str) -> None:
        email = email.strip().lower()
        with self.connect() as conn, conn.begin():
            done = conn.execute(delete(self.SuperAdmin).where(self.SuperAdmin.email == email))
            if done.rowcount == 0:
                raise NotFoundError("super admin", email)
            self._audit(conn, "admin_remove", None, email=email)

    def authenticate(self, token: str) -> SuperAdminInfo | None:
        """The super admin holding ``token``; None for any other string."""
        if not token.startswith(ADMIN_TOKEN_PREFIX) or len(token) > 200:
            return None
        s = self.SuperAdmin
        with self.connect() as conn:
            row = conn.execute(
                select(s.email, s.external_id, s.token_hash.is_not(None), s.created_at).where(
                    s.token_hash == hash_admin_token(token)
                )
            ).first()
        return SuperAdminInfo(*row) if row is not None else None


def _rename_schema(old: str, new: str) -> TextClause:
    return text(f"ALTER SCHEMA {quote_identifier(old)} RENAME TO {quote_identifier(new)}")


def _advance_sequences(conn: Connection, schema: str, tables: list[Table]) -> None:
    """Move each identity/serial sequence of the copied tables past the largest copied id."""
    for table in tables:
        for column in table.columns:
            qualified = f"{quote_identifier(schema)}.{quote_identifier(table.name)}"
            seq = conn.execute(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": qualified, "c": column.name}
            ).scalar()
            if seq is None:
                continue
            conn.execute(
                text(
                    f"SELECT setval(:seq, COALESCE((SELECT max({quote_identifier(column.name)}) "
                    f"FROM {qualified}), 0) + 1, false)"
                ),
                {"seq": seq},
            )


def _copy_database(source: URL, target: URL, tables: list[Table]) -> None:
    """Copy every row of ``tables`` from ``source`` to ``target`` (binary COPY, one
    transaction on the target, foreign-key order), then advance the target's sequences."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from db_kit.errors import translating

    src_engine = create_engine(source, poolclass=NullPool)
    dst_engine = create_engine(target, poolclass=NullPool)
    try:
        with translating(url=source), src_engine.connect() as src, dst_engine.begin() as dst:
            src.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
            src_raw: Any = src.connection.dbapi_connection
            dst_raw: Any = dst.connection.dbapi_connection
            for table in tables:
                columns = ", ".join(quote_identifier(c.name) for c in table.columns)
                name = quote_identifier(table.name)
                with (
                    src_raw.cursor() as out,
                    dst_raw.cursor() as into,
                    out.copy(f"COPY {name} ({columns}) TO STDOUT (FORMAT BINARY)") as reader,
                    into.copy(f"COPY {name} ({columns}) FROM STDIN (FORMAT BINARY)") as writer,
                ):
                    for chunk in reader:
                        writer.write(chunk)
            schema = dst.execute(text("SELECT current_schema()")).scalar() or "public"
            _advance_sequences(dst, schema, tables)
    finally:
        src_engine.dispose()
        dst_engine.dispose()
