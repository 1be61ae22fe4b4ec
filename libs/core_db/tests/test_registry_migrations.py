"""pytest-alembic's checks on the core schema's own migrations (the tenant registry)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from alembic.config import Config
from pytest_alembic.tests import (  # noqa: F401  (collected as tests of this module)
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL

from core_db.config import REGISTRY
from db_kit.migrations import Migrator


@pytest.fixture
def migration_url(fresh_database: Callable[..., URL]) -> URL:
    return fresh_database("registry")


@pytest.fixture
def alembic_config(migration_url: URL) -> Config:
    return Migrator(REGISTRY, migration_url).alembic_config()


@pytest.fixture
def alembic_engine(migration_url: URL) -> Iterator[Engine]:
    engine = create_engine(migration_url)
    yield engine
    engine.dispose()
