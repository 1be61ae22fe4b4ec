"""Models of the ``control`` schema: the registry of bibikos tenants and their databases."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import DeclarativeBase

from db_kit.models import new_metadata
from db_kit.tenancy.registry import (
    PluginMixin,
    SuperAdminMixin,
    TenantAuditMixin,
    TenantDatabaseRegistryMixin,
    TenantDomainMixin,
    TenantMoveMixin,
    TenantPluginMixin,
    TenantStatus,
)

SCHEMA = "control"


class RegistryBase(DeclarativeBase):
    metadata = new_metadata(schema=SCHEMA)
    __mapper_args__: Any = {"eager_defaults": True}


class Tenant(TenantDatabaseRegistryMixin, RegistryBase):
    """One tenant and the database that holds its data (the kit's registry contract)."""

    __tablename__ = "tenants"


class TenantDomain(TenantDomainMixin, RegistryBase):
    """A host name served as a tenant."""

    __tablename__ = "tenant_domains"


class Plugin(PluginMixin, RegistryBase):
    """A plugin of the catalogue."""

    __tablename__ = "plugins"


class TenantPlugin(TenantPluginMixin, RegistryBase):
    """A plugin installed for a tenant, with its configuration."""

    __tablename__ = "tenant_plugins"


class SuperAdmin(SuperAdminMixin, RegistryBase):
    """An operator with access to every tenant."""

    __tablename__ = "super_admins"


class TenantAudit(TenantAuditMixin, RegistryBase):
    """Who changed which tenant, when, and how."""

    __tablename__ = "tenant_audit"


class TenantMove(TenantMoveMixin, RegistryBase):
    """A move of a tenant's data between servers, phase by phase."""

    __tablename__ = "tenant_moves"


Base = RegistryBase  # the name DatabaseConfig.models expects

__all__ = [
    "SCHEMA",
    "Base",
    "Plugin",
    "RegistryBase",
    "SuperAdmin",
    "Tenant",
    "TenantAudit",
    "TenantDomain",
    "TenantMove",
    "TenantPlugin",
    "TenantStatus",
]
