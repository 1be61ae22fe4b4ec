"""Alembic migrations of the core database (shipped inside the package)."""
