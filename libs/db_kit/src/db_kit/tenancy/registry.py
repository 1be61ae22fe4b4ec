"""The tenant registry contract of schema-per-tenant databases, owned by the kit.

A db lib's registry model composes ``TenantRegistryMixin`` into its own declarative base
(django-tenants' ``TenantMixin`` is the model)::

    class Tenant(TenantRegistryMixin, RegistryBase):
        __tablename__ = "tenants"

and names it in its ``SchemaTenancy(registry_model="core_db.registry.models:Tenant")``. The
kit reads and writes the registry through these typed attributes, so a renamed column
fails type checking, not production; statuses are ``TenantStatus`` members, not literals.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, String, Text, Uuid, func, text
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

__all__ = ["TenantRegistryMixin", "TenantStatus"]


class TenantStatus(StrEnum):
    """Where a tenant is in its life: only ``ACTIVE`` tenants are served."""

    PROVISIONING = "provisioning"
    ACTIVE = "active"
    SUSPENDED = "suspended"


class TenantRegistryMixin:
    """One tenant and the schema that holds its data; what the kit needs of a registry row."""

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
    schema_name: Mapped[str] = mapped_column(String(63), unique=True)
    status: Mapped[str] = mapped_column(String(20), server_default=TenantStatus.PROVISIONING.value)
    region: Mapped[str | None] = mapped_column(String(20))
    # The revision of the tenant's schema, written in the same transaction as its upgrade.
    revision: Mapped[str | None] = mapped_column(String(64))
    migrated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Why its last migration failed (None: it did not).
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
