"""`db core seed` / `db bibikos seed`: idempotent, and grants admin on request."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.engine import URL
from typer.testing import CliRunner

import bibikos_db
import core_db
from db_tools.cli import build_app
from db_tools.testing import run_sql


def scalar(url: URL, sql: str) -> object:
    return run_sql(url, sql)[0][0]


@pytest.mark.parametrize(
    ("config", "variable"),
    [(core_db.CONFIG, "DATABASE_URL"), (bibikos_db.CONFIG, "BIBIKOS_DATABASE_URL")],
)
def test_seed_is_idempotent_and_grants_admin(
    config: object,
    variable: str,
    database_at_head: Callable[..., URL],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = database_at_head(config)
    monkeypatch.setenv(variable, url.render_as_string(hide_password=False))
    config.reset()  # type: ignore[attr-defined]
    name = config.name  # type: ignore[attr-defined]
    runner = CliRunner()
    try:
        for _ in range(2):
            result = runner.invoke(build_app(), [name, "seed"])
            assert result.exit_code == 0, result.output
        assert scalar(url, "SELECT count(*) FROM roles") == 2
        assert scalar(url, "SELECT count(*) FROM prices") == 2

        monkeypatch.setenv("SEED_ADMIN_EMAIL", "boss@example.com")
        result = runner.invoke(build_app(), [name, "seed"])
        assert "no such user yet" in result.output
        scalar(url, "INSERT INTO auth_users (email) VALUES ('boss@example.com') RETURNING id")
        assert runner.invoke(build_app(), [name, "seed"]).exit_code == 0
        granted = scalar(
            url,
            "SELECT count(*) FROM user_roles ur JOIN roles r ON r.id = ur.role_id "
            "JOIN auth_users u ON u.id = ur.user_id WHERE r.name = 'admin' AND u.email = 'boss@example.com'",
        )
        assert granted == 1
    finally:
        config.reset()  # type: ignore[attr-defined]
