"""db_tools.remote's pieces: which connection failures are worth waiting for, and the waiting.

The end-to-end runs of the migration entrypoint (both databases, a second run, each bad
input) are in tests/run_migrations/. Here: the classifier on real errors from a real server
where this machine can produce them (closed port, missing database), and on libpq's own
message texts where it cannot (a server starting up, DNS not resolvable yet).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL

import core_db
from db_kit.errors import ConnectFailure, classify_connect_error, connect_failure_reason
from db_shared.errors import ConfigurationError
from db_tools.remote import (
    RemoteDeployError,
    Target,
    choose,
    redact,
    wait_until_reachable,
)
from db_tools.testing import PostgresServer, unused_port


def _connect_error(url: URL) -> sa_exc.DBAPIError:
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with pytest.raises(sa_exc.DBAPIError) as caught:
            engine.connect()
    finally:
        engine.dispose()
    return caught.value


# Texts libpq gives (psycopg prefixes "connection failed: "); none of them has a SQLSTATE.
LIBPQ = 'connection failed: connection to server at "10.0.0.5", port 5432 failed: '
MESSAGES = [
    (LIBPQ + 'FATAL:  password authentication failed for user "app"', ConnectFailure.CREDENTIALS),
    (LIBPQ + 'FATAL:  role "app" does not exist', ConnectFailure.CREDENTIALS),
    (LIBPQ + "fe_sendauth: no password supplied", ConnectFailure.CREDENTIALS),
    (LIBPQ + 'FATAL:  database "core" does not exist', ConnectFailure.NO_DATABASE),
    (LIBPQ + "FATAL:  the database system is starting up", ConnectFailure.NOT_READY),
    (LIBPQ + "FATAL:  sorry, too many clients already", ConnectFailure.NOT_READY),
    (
        LIBPQ + "Connection refused\n\tIs the server running on that host and accepting TCP/IP "
        "connections?",
        ConnectFailure.NOT_READY,
    ),
    (LIBPQ + "timeout expired", ConnectFailure.NOT_READY),
    ("failed to resolve host 'db': [Errno -3] Temporary failure in name resolution", ConnectFailure.NOT_READY),
    ('could not translate host name "db" to address: Name or service not known', ConnectFailure.NOT_READY),
    (LIBPQ + "No route to host", ConnectFailure.NOT_READY),
    (
        LIBPQ + 'FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "app", database "core", '
        "no encryption",
        ConnectFailure.REFUSED,
    ),
    (LIBPQ + "server does not support SSL, but SSL was required", ConnectFailure.REFUSED),
]  # fmt: skip


@pytest.mark.parametrize(("message", "expected"), MESSAGES)
def test_libpq_messages_are_classified(message: str, expected: ConnectFailure) -> None:
    kind, reason = classify_connect_error(psycopg.OperationalError(message))
    assert kind is expected
    assert "connection to server" not in reason
    assert not reason.startswith("FATAL")
    assert "\n" not in reason


def test_the_reason_is_the_servers_words() -> None:
    assert connect_failure_reason(MESSAGES[0][0]) == 'password authentication failed for user "app"'
    assert connect_failure_reason(MESSAGES[6][0]) == "Connection refused"


def test_sqlstate_wins_over_text() -> None:
    class Refused(psycopg.OperationalError):
        sqlstate = "28P01"

    assert classify_connect_error(Refused("starting up"))[0] is ConnectFailure.CREDENTIALS


def test_real_closed_port_is_worth_waiting_for() -> None:
    port = unused_port()
    error = _connect_error(URL.create("postgresql+psycopg", "u", "pw", "127.0.0.1", port, "x"))
    kind, reason = classify_connect_error(error)
    assert kind is ConnectFailure.NOT_READY
    assert reason == "Connection refused"


def test_real_missing_database_is_not(postgres_server: PostgresServer) -> None:
    error = _connect_error(postgres_server.admin_url.set(database="no_such_db_runmig"))
    kind, reason = classify_connect_error(error)
    assert kind is ConnectFailure.NO_DATABASE
    assert reason == 'database "no_such_db_runmig" does not exist'


def test_wait_returns_at_once_when_the_server_answers(
    fresh_database: Callable[..., URL],
) -> None:
    url = fresh_database("wait")
    started = time.monotonic()
    wait_until_reachable(
        Target("core", url, "DATABASE_URL"),
        core_db.CONFIG.settings(),
        timeout=30,
        deadline=time.monotonic() + 30,
    )
    assert time.monotonic() - started < 5


def test_wait_gives_up_after_the_deadline_on_aunused_port() -> None:
    port = unused_port()
    url = URL.create("postgresql+psycopg", "u", "hunter2-secret", "127.0.0.1", port, "core")
    pauses: list[float] = []
    started = time.monotonic()
    with pytest.raises(RemoteDeployError) as caught:
        wait_until_reachable(
            Target("core", url, "DATABASE_URL"),
            core_db.CONFIG.settings(),
            timeout=3,
            deadline=started + 3,
            sleep=lambda s: (pauses.append(s), time.sleep(s))[1],
        )
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert pauses, "it should have retried before giving up"
    assert 2 <= elapsed < 5, elapsed
    assert f"127.0.0.1:{port} did not answer within 3 s" in message
    assert "Connection refused" in message
    assert "DATABASE_URL" in message
    assert "MIGRATE_WAIT_TIMEOUT" in message
    assert "hunter2" not in message


def test_wait_fails_at_once_on_a_missing_database(postgres_server: PostgresServer) -> None:
    url = postgres_server.admin_url.set(database="no_such_db_runmig")
    started = time.monotonic()
    with pytest.raises(RemoteDeployError, match="does not exist") as caught:
        wait_until_reachable(
            Target("bibikos", url, "BIBIKOS_DATABASE_URL"),
            core_db.CONFIG.settings(),
            timeout=30,
            deadline=started + 30,
        )
    assert time.monotonic() - started < 5
    assert "BIBIKOS_DATABASE_URL" in str(caught.value)


def test_choose_databases() -> None:
    available = {"bibikos": "B", "core": "C"}
    assert choose(["core,bibikos"], available) == ["C", "B"]  # type: ignore[arg-type]
    assert choose(["bibikos", "core", "core"], available) == ["B", "C"]  # type: ignore[arg-type]
    assert choose([""], available) == ["B", "C"]  # type: ignore[arg-type]
    assert choose(["all"], available) == ["B", "C"]  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"Unknown database 'nope'.*bibikos, core"):
        choose(["core nope"], available)  # type: ignore[arg-type]


def test_redact_masks_long_passwords_only() -> None:
    assert redact("pw=s3cret! and s3cret!", {"s3cret!"}) == "pw=*** and ***"
    assert redact("a line", set()) == "a line"
