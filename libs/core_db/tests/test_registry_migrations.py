"""pytest-alembic's checks on the core schema (tenant registry) of core_db's migrations, against a fresh real database."""

from __future__ import annotations

from pytest_alembic.tests import (  # noqa: F401  (collected as tests of this module)
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

from core_db.config import REGISTRY
from db_tools.testing import alembic_test_fixtures

alembic_config, alembic_engine = alembic_test_fixtures(REGISTRY)
