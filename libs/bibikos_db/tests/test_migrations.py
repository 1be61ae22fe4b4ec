"""pytest-alembic's checks on the bibikos_db migrations, against a fresh real database."""

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

from bibikos_db import CONFIG
from db_kit.migrations import Migrator


@pytest.fixture
def migration_url(fresh_database: Callable[..., URL]) -> URL:
    return fresh_database("bibikos_db")


@pytest.fixture
def alembic_config(migration_url: URL) -> Config:
    return Migrator(CONFIG, migration_url).alembic_config()


@pytest.fixture
def alembic_engine(migration_url: URL) -> Iterator[Engine]:
    engine = create_engine(migration_url)
    yield engine
    engine.dispose()
