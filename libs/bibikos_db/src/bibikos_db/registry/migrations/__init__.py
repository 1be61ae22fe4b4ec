"""Alembic migrations of the control schema (tenant registry)."""
