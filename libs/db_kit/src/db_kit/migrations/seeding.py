"""Development seed data: the db lib's seed function, in one transaction, where it belongs.

``seed(db, tenant)`` seeds the database, a tenant's schema (schema-per-tenant) or a
tenant's database (database-per-tenant); the slug is validated before it names anything.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from db_kit.config import DatabaseConfig
from db_kit.migrations.database_tenants import TenantDatabaseMigrator
from db_kit.migrations.migrator import Migrator
from db_kit.tenancy.url_resolvers import TenantDatabaseSettings
from db_shared.errors import ConfigurationError, NotFoundError

__all__ = ["run_seed", "seed"]


def seed(db: DatabaseConfig, tenant: str | None = None) -> str | None:
    """Seed ``db`` (or one tenant of it); returns the seed's note for the operator."""
    migrator = Migrator(db)
    if tenant is not None and db.tenancy is None:
        if isinstance(migrator.settings, TenantDatabaseSettings):
            return run_seed(Migrator(db, TenantDatabaseMigrator(db).existing_url(tenant)))
        raise ConfigurationError(f"The {db.name} database has no tenants.")
    return run_seed(migrator, tenant)


def run_seed(migrator: Migrator, tenant: str | None = None) -> str | None:
    """The seed function on ``migrator``'s database, in ``tenant``'s schema when given."""
    db = migrator.db
    fn = db.seed_function()
    if fn is None:
        raise ConfigurationError(f"The {db.name} database defines no seed function.")
    schema = None
    if tenant is not None:
        if db.tenancy is None:
            raise ConfigurationError(f"The {db.name} database has no tenant schemas.")
        schema = db.tenancy.schema_for(tenant)  # validated before any SQL
    with migrator.connect() as raw:
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
