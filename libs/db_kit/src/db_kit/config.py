"""One object per database naming its settings, models, migrations and version table."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase, Session

from db_kit.settings import DatabaseSettings
from db_kit.tenancy.registry import TenantDatabaseRegistryMixin, TenantRegistryMixin


def _import(path: str) -> Any:
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


@dataclass(frozen=True)
class SchemaTenancy:
    """Schema-per-tenant layout of a database.

    Tenant tables have no schema in the models; each tenant's live in ``<prefix><slug>``
    (sessions translate it with ``schema_translate_map``). The registry of tenants lives
    in its own schema with its own models and migrations (``registry``); its tenant model
    (``registry_model``, "module:Class") composes ``db_kit.tenancy.TenantRegistryMixin``.
    """

    registry: DatabaseConfig
    registry_model: str
    schema_prefix: str = "tenant_"

    @property
    def model(self) -> type[TenantRegistryMixin]:
        """The registry's tenant model: the kit reads and writes tenants through it."""
        model = _import(self.registry_model)
        if not (isinstance(model, type) and issubclass(model, TenantRegistryMixin)):
            raise TypeError(
                f"{self.registry_model} must be a model class composing TenantRegistryMixin."
            )
        return model

    def schema_for(self, slug: str) -> str:
        """The schema of tenant ``slug``; the slug is validated before it names anything."""
        from db_shared.tenancy import validate_tenant_slug

        return f"{self.schema_prefix}{validate_tenant_slug(slug)}"


@dataclass(frozen=True)
class DatabaseTenancy:
    """Database-per-tenant layout: each tenant's data lives in a database of its own.

    The registry of tenants (``registry``: its own models and migrations, in a schema of the
    library's main database, the control database) names each tenant's database; its
    tenant model (``registry_model``, "module:Class") composes
    ``db_kit.tenancy.TenantDatabaseRegistryMixin``. A static map in the settings (such as
    ``BIBIKOS_TENANT_URLS``) still serves the tenants it lists.
    """

    registry: DatabaseConfig
    registry_model: str
    database_prefix: str = "tenant_"

    @property
    def model(self) -> type[TenantDatabaseRegistryMixin]:
        """The registry's tenant model: the kit reads and writes tenants through it."""
        model = _import(self.registry_model)
        if not (isinstance(model, type) and issubclass(model, TenantDatabaseRegistryMixin)):
            raise TypeError(
                f"{self.registry_model} must be a model class composing "
                "TenantDatabaseRegistryMixin."
            )
        return model

    def database_for(self, slug: str) -> str:
        """The database name a new tenant ``slug`` gets; the slug is validated first."""
        from db_shared.tenancy import validate_tenant_slug

        return f"{self.database_prefix}{validate_tenant_slug(slug)}"


@dataclass(frozen=True)
class DatabaseConfig:
    """Everything the toolkit needs to know about one database library.

    ``models`` names a module exporting ``Base`` (its declarative base) after importing every
    model file; it is imported lazily so reading the config never maps classes.
    """

    name: str
    settings_class: type[DatabaseSettings]
    models: str
    migrations: str
    version_table: str = "alembic_version"
    seed: str | None = None
    description: str = ""
    # Where the version table lives; None: the connection's default (search_path) schema.
    version_table_schema: str | None = None
    # Schemas autogenerate and drift checks look at; empty: the default schema only.
    schemas: tuple[str, ...] = ()
    # Schema-per-tenant: the registry's own config (core schema) and how schemas are named.
    tenancy: SchemaTenancy | None = None
    # Database-per-tenant: the registry's own config (in the control database).
    database_tenancy: DatabaseTenancy | None = None
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.tenancy is not None and self.database_tenancy is not None:
            raise ValueError(f"{self.name}: a database is schema- or database-per-tenant, not both")
        if self.registry is not None:
            self.registry._cache["registry_of"] = self

    @property
    def registry(self) -> DatabaseConfig | None:
        """The migration stream of this database's tenant registry; None without one."""
        if self.tenancy is not None:
            return self.tenancy.registry
        if self.database_tenancy is not None:
            return self.database_tenancy.registry
        return None

    @property
    def registry_model(self) -> type[TenantRegistryMixin] | type[TenantDatabaseRegistryMixin]:
        """The tenant model of this database's registry (``ValueError`` without one)."""
        if self.tenancy is not None:
            return self.tenancy.model
        if self.database_tenancy is not None:
            return self.database_tenancy.model
        raise ValueError(f"the {self.name} database has no tenant registry")

    @property
    def registry_of(self) -> DatabaseConfig | None:
        """The schema-per-tenant database whose tenant registry this is; None otherwise."""
        owner: DatabaseConfig | None = self._cache.get("registry_of")
        return owner

    def settings(self) -> DatabaseSettings:
        """The settings, read once per process (``reset()`` rereads them)."""
        if "settings" not in self._cache:
            self._cache["settings"] = self.settings_class.load()
        settings: DatabaseSettings = self._cache["settings"]
        return settings

    def reset(self) -> None:
        """Forget cached settings (tests change the environment between cases)."""
        self._cache.pop("settings", None)

    @cached_property
    def base(self) -> type[DeclarativeBase]:
        base: type[DeclarativeBase] = _import(self.models).Base
        return base

    @property
    def metadata(self) -> MetaData:
        return self.base.metadata

    @property
    def migrations_dir(self) -> Path:
        module = importlib.import_module(self.migrations)
        assert module.__file__ is not None
        return Path(module.__file__).parent

    def seed_function(self) -> Callable[[Session], str | None] | None:
        if self.seed is None:
            return None
        fn: Callable[[Session], str | None] = _import(self.seed)
        return fn
