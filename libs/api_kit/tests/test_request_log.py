"""The per-request log line is INFO only where development was chosen explicitly."""

from __future__ import annotations

import logging

import pytest

from api_kit.observability import request_log_level


@pytest.mark.parametrize(
    ("environment", "level"),
    [(None, logging.DEBUG), ("production", logging.DEBUG), ("test", logging.DEBUG),
     ("development", logging.INFO)],
)  # fmt: skip
def test_request_log_level_follows_an_explicit_environment(
    monkeypatch: pytest.MonkeyPatch, environment: str | None, level: int
) -> None:
    monkeypatch.delenv("APP_ENV", raising=False)
    if environment is None:
        monkeypatch.delenv("ENVIRONMENT", raising=False)
    else:
        monkeypatch.setenv("ENVIRONMENT", environment)
    assert request_log_level() == level
