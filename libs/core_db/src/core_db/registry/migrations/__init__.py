"""Alembic migrations of the core schema (tenant registry)."""
