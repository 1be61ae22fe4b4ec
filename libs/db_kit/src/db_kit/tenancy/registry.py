"""The tenant registry contract, owned by the kit, for both tenancy modes.

A db lib's registry models compose these mixins into its own declarative base (whose
``MetaData`` names the registry's schema; django-tenants' ``TenantMixin`` and ``DomainMixin``
are the model)::

    class Tenant(TenantRegistryMixin, RegistryBase):          # schema-per-tenant
        __tablename__ = "tenants"

    class Tenant(TenantDatabaseRegistryMixin, RegistryBase):  # database-per-tenant
        __tablename__ = "tenants"

    class TenantDomain(TenantDomainMixin, RegistryBase):
        __tablename__ = "tenant_domains"

and the same for ``PluginMixin``, ``TenantPluginMixin``, ``SuperAdminMixin`` and
``TenantAuditMixin``. The kit reads and writes the registry through these typed attributes,
so a renamed column fails type checking, not production; statuses are ``TenantStatus``
members, not literals. Foreign keys name ``<schema>.tenants`` / ``<schema>.plugins`` of the
model's own metadata.

Every change to the registry's tables is announced with ``NOTIFY`` (``registry_notify_sql``,
run by the registry's migrations), so each worker process forgets what it cached at once.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from db_kit.sql import quote_identifier

__all__ = [
    "REGISTRY_CHANNEL",
    "MovePhase",
    "PluginMixin",
    "SuperAdminMixin",
    "TenantAuditMixin",
    "TenantDatabaseRegistryMixin",
    "TenantDomainMixin",
    "TenantMoveMixin",
    "TenantPluginMixin",
    "TenantRecordMixin",
    "TenantRegistryMixin",
    "TenantStatus",
    "registry_notify_sql",
    "registry_unnotify_sql",
]

# The NOTIFY channel every registry announces its changes on.
REGISTRY_CHANNEL = "db_kit_registry"


class TenantStatus(StrEnum):
    """Where a tenant is in its life: only ``ACTIVE`` tenants are served."""

    PROVISIONING = "provisioning"
    ACTIVE = "active"
    SUSPENDED = "suspended"


def _schema_of(cls: Any) -> str:
    schema = cls.metadata.schema
    return f"{schema}." if schema else ""


class TenantRecordMixin:
    """What every registry row holds, whichever way the tenant's data is kept."""

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[Any, ...]:
        return (
            CheckConstraint("slug ~ '^[a-z][a-z0-9_]{0,39}$'", name="slug_format"),
            CheckConstraint(
                "status IN (" + ", ".join(f"'{s.value}'" for s in TenantStatus) + ")",
                name="status",
            ),
        )

    id: Mapped[uuid.UUID] = mapped_column(
        Uuid, primary_key=True, server_default=text("gen_random_uuid()")
    )
    slug: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), server_default=TenantStatus.PROVISIONING.value)
    region: Mapped[str | None] = mapped_column(String(20))
    # The revision of the tenant's schema, written in the same transaction as its upgrade.
    revision: Mapped[str | None] = mapped_column(String(64))
    migrated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Why its last migration failed (None: it did not).
    last_error: Mapped[str | None] = mapped_column(Text)
    # Placement: the server (a name of <PREFIX>SERVERS) holding its data; None: the default
    # server. The version grows with every move, so a cached placement can be told stale.
    server: Mapped[str | None] = mapped_column(String(63))
    placement_version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class TenantRegistryMixin(TenantRecordMixin):
    """A schema-per-tenant registry row: the tenant and the schema that holds its data.

    The schema keeps its name when the slug is renamed, so the data stays where it is.
    """

    schema_name: Mapped[str] = mapped_column(String(63), unique=True)


class TenantDatabaseRegistryMixin(TenantRecordMixin):
    """A database-per-tenant registry row: the tenant and the database that holds its data.

    ``database_name`` is a database on the registry's own server: its URL is the control
    database's URL with the database name replaced (credentials never live in the table).
    The database keeps its name when the slug is renamed.
    """

    database_name: Mapped[str] = mapped_column(String(63), unique=True)


class TenantDomainMixin:
    """A host name served as a tenant (django-tenants' ``Domain``); lower-case, no port."""

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[Any, ...]:
        return (
            CheckConstraint("domain = lower(domain) AND length(domain) <= 253", name="domain"),
            Index(None, "tenant_id"),
        )

    domain: Mapped[str] = mapped_column(String(253), primary_key=True)

    @declared_attr
    @classmethod
    def tenant_id(cls) -> Mapped[uuid.UUID]:
        return mapped_column(ForeignKey(f"{_schema_of(cls)}tenants.id", ondelete="CASCADE"))

    is_primary: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PluginMixin:
    """A plugin of the catalogue."""

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(50))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TenantPluginMixin:
    """A plugin installed for a tenant, with its configuration."""

    @declared_attr
    @classmethod
    def tenant_id(cls) -> Mapped[uuid.UUID]:
        return mapped_column(
            ForeignKey(f"{_schema_of(cls)}tenants.id", ondelete="CASCADE"), primary_key=True
        )

    @declared_attr
    @classmethod
    def plugin_id(cls) -> Mapped[str]:
        return mapped_column(
            ForeignKey(f"{_schema_of(cls)}plugins.id", ondelete="RESTRICT"), primary_key=True
        )

    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    configuration: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    installed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class SuperAdminMixin:
    """An operator with access to every tenant.

    ``token_hash`` is the SHA-256 of the admin API token issued when the admin was added
    (the token itself is shown once and never stored); None: no API access.
    """

    id: Mapped[uuid.UUID] = mapped_column(
        Uuid, primary_key=True, server_default=text("gen_random_uuid()")
    )
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TenantAuditMixin:
    """One change to the registry: who made it, when, to which tenant, and what it was.

    Written in the same transaction as the change. The tenant is kept by slug (as it was
    then), so the record outlives the tenant.
    """

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[Any, ...]:
        return (Index(None, "tenant_slug", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(40))
    tenant_slug: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))


class MovePhase(StrEnum):
    """Where a tenant move stands (``db_kit.tenancy.moves``); each phase is recorded once
    done, so a killed move resumes after its last one, or is rolled back."""

    PLANNED = "planned"  # recorded; nothing made yet
    COPIED = "copied"  # the tenant's tables made on the target (empty)
    SYNCED = "synced"  # logical replication caught up (the dump method skips it)
    FROZEN = "frozen"  # writes refused on the source
    DRAINED = "drained"  # everything written before the freeze is on the target
    FLIPPED = "flipped"  # the registry places the tenant on the target
    DONE = "done"  # replication objects gone; the source kept under another name
    ABORTED = "aborted"  # rolled back: the tenant is served from the source


class TenantMoveMixin:
    """One move of a tenant's data from a server to another, phase by phase.

    At most one unfinished move per tenant (a partial unique index). ``source_copy`` names
    the source's renamed copy (schema or database) kept after the flip for a rollback
    window; ``copy_dropped_at`` is set once it is dropped.
    """

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[Any, ...]:
        return (
            Index(
                None,
                "tenant_slug",
                unique=True,
                postgresql_where=text("phase NOT IN ('done', 'aborted')"),
            ),
        )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    tenant_slug: Mapped[str] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(63))
    target: Mapped[str] = mapped_column(String(63))
    method: Mapped[str] = mapped_column(String(20))
    phase: Mapped[str] = mapped_column(String(20), server_default=MovePhase.PLANNED.value)
    actor: Mapped[str] = mapped_column(String(320))
    error: Mapped[str | None] = mapped_column(Text)
    # Milliseconds from the freeze to the flip (writes refused meanwhile).
    freeze_ms: Mapped[int | None] = mapped_column(Integer)
    source_copy: Mapped[str | None] = mapped_column(String(63))
    copy_dropped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


def registry_notify_sql(schema: str, tables: tuple[str, ...]) -> list[str]:
    """DDL for a registry migration: each statement on ``tables`` NOTIFYs the channel.

    Listeners (``db_kit.tenancy.lookup``) forget their cached answers on any notification,
    so a suspended tenant is refused by every worker at once, whatever made the change
    (the CLI, the admin API, or an operator's ``UPDATE``).
    """
    s = quote_identifier(schema)
    statements = [
        f"CREATE OR REPLACE FUNCTION {s}.notify_registry_change() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN "
        f"PERFORM pg_notify('{REGISTRY_CHANNEL}', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME); "
        "RETURN NULL; END $$"
    ]
    for table in tables:
        t = quote_identifier(table)
        statements.append(
            f"CREATE TRIGGER notify_registry_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f"ON {s}.{t} FOR EACH STATEMENT EXECUTE FUNCTION {s}.notify_registry_change()"
        )
    return statements


def registry_unnotify_sql(schema: str, tables: tuple[str, ...]) -> list[str]:
    """The downgrade of ``registry_notify_sql``."""
    s = quote_identifier(schema)
    return [
        *(
            f"DROP TRIGGER IF EXISTS notify_registry_change ON {s}.{quote_identifier(t)}"
            for t in tables
        ),
        f"DROP FUNCTION IF EXISTS {s}.notify_registry_change()",
    ]
