"""pytest-alembic's checks on bibikos_db's migrations, against a fresh real database."""

from __future__ import annotations

from pytest_alembic.tests import (  # noqa: F401  (collected as tests of this module)
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

from bibikos_db import CONFIG
from db_tools.testing import alembic_test_fixtures

alembic_config, alembic_engine = alembic_test_fixtures(CONFIG)
