"""Models of the ``core`` schema: global data, one copy for all tenants."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    String,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db_kit.models import new_metadata
from db_kit.tenancy.registry import TenantRegistryMixin, TenantStatus

SCHEMA = "core"


class RegistryBase(DeclarativeBase):
    metadata = new_metadata(schema=SCHEMA)
    __mapper_args__: Any = {"eager_defaults": True}


class Tenant(TenantRegistryMixin, RegistryBase):
    """One tenant and the schema that holds its data (the kit's registry contract)."""

    __tablename__ = "tenants"


class Plugin(RegistryBase):
    """A plugin of the catalogue."""

    __tablename__ = "plugins"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(50))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TenantPlugin(RegistryBase):
    """A plugin installed for a tenant, with its configuration."""

    __tablename__ = "tenant_plugins"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("core.tenants.id", ondelete="CASCADE"), primary_key=True
    )
    plugin_id: Mapped[str] = mapped_column(
        ForeignKey("core.plugins.id", ondelete="RESTRICT"), primary_key=True
    )
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    configuration: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    installed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class SuperAdmin(RegistryBase):
    """An operator with access to every tenant."""

    __tablename__ = "super_admins"

    id: Mapped[uuid.UUID] = mapped_column(
        Uuid, primary_key=True, server_default=text("gen_random_uuid()")
    )
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


Base = RegistryBase  # the name DatabaseConfig.models expects

__all__ = [
    "SCHEMA",
    "Base",
    "Plugin",
    "RegistryBase",
    "SuperAdmin",
    "Tenant",
    "TenantPlugin",
    "TenantStatus",
]
