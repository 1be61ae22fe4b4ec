"""Alembic migrations of the bibikos database (shipped inside the package)."""
