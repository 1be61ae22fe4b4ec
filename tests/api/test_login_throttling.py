"""Login throttling and rehash on login, over HTTP on a real uvicorn, once per app.

Failed logins are counted in the database (``auth_login_failures``), per account and per
client address, so the limits hold across worker processes: the cross-process test runs two
uvicorn processes on one database and spreads the attempts over both.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from conftest import APPS
from harness import Api, LiveServer
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

import core_db
from core_db.config import REGISTRY
from db_kit.database import SQLAlchemyDatabase
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.schema_tenants import SchemaTenantMigrator
from my_api.main import MyApiRouting, create_app

PASSWORD = "correct horse 1"
URL_VARIABLE = {"my_api": "DATABASE_URL", "bibikos_api": "BIBIKOS_DATABASE_URL"}


def _login(client: httpx.Client, email: str, password: str) -> httpx.Response:
    return client.post("/auth/login", json={"email": email, "password": password})


def _email() -> str:
    return f"throttle-{uuid.uuid4().hex[:10]}@example.com"


def _assert_throttled(r: httpx.Response, at_most: int) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["code"] == "too_many_login_attempts"
    assert "access_token" not in r.json()
    retry_after = int(r.headers["Retry-After"])
    assert 1 <= retry_after <= at_most


def test_sixth_failed_login_is_refused_even_with_the_right_password(api: Api) -> None:
    email = api.register(_email(), PASSWORD)["email"]
    for _ in range(5):
        assert _login(api.client, email, "wrong password").status_code == 401
    sixth = _login(api.client, email, "wrong password")
    _assert_throttled(sixth, at_most=900)
    right = _login(api.client, email, PASSWORD)
    _assert_throttled(right, at_most=900)
    # Same answer whether the password was right or wrong: nothing is revealed.
    assert right.json() == sixth.json()
    # The limit is the account's: another account from the same address still logs in.
    other = api.register(_email(), PASSWORD)
    assert other["token"]
    rows = api.sql("SELECT kind, failures FROM auth_login_failures WHERE key = :email", email=email)
    assert rows == [("account", 6)]  # counting stops at the limit + 1


def test_parallel_guesses_get_no_more_than_the_limit(api: Api) -> None:
    """Each attempt takes its slot before the password is checked, so a burst of parallel
    guesses gets exactly five answers of 401, however the requests interleave."""
    email = api.register(_email(), PASSWORD)["email"]

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
            body = {"email": email, "password": "wrong password"}
            answers = await asyncio.gather(
                *(client.post("/auth/login", json=body) for _ in range(12))
            )
            return sorted(r.status_code for r in answers)

    assert asyncio.run(burst()) == [401] * 5 + [429] * 7


def test_unknown_accounts_count_too(api: Api) -> None:
    email = _email()  # never registered: the answer must not tell it apart
    for _ in range(5):
        assert _login(api.client, email, "whatever").status_code == 401
    _assert_throttled(_login(api.client, email, "whatever"), at_most=900)


def test_per_address_limit_across_accounts(api: Api) -> None:
    victim = api.register(_email(), PASSWORD)["email"]
    # 20 failures (the default per address), each on a different account.
    for _ in range(20):
        assert _login(api.client, _email(), "wrong password").status_code == 401
    _assert_throttled(_login(api.client, _email(), "wrong password"), at_most=900)
    # The address is refused for every account, even with a correct password.
    _assert_throttled(_login(api.client, victim, PASSWORD), at_most=900)
    rows = api.sql("SELECT failures FROM auth_login_failures WHERE kind = 'address'")
    assert rows == [(21,)]


def test_success_clears_the_account_counter(api: Api) -> None:
    email = api.register(_email(), PASSWORD)["email"]
    for _ in range(4):
        assert _login(api.client, email, "wrong password").status_code == 401
    assert _login(api.client, email, PASSWORD).status_code == 200
    assert api.sql("SELECT 1 FROM auth_login_failures WHERE key = :email", email=email) == []
    # A full quota again: five more failures before the refusal.
    for _ in range(5):
        assert _login(api.client, email, "wrong password").status_code == 401
    _assert_throttled(_login(api.client, email, PASSWORD), at_most=900)


def test_the_window_expires(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_LOGIN_FAILURE_WINDOW_SECONDS", "2")
    monkeypatch.setenv("AUTH_LOGIN_MAX_FAILURES_PER_ACCOUNT", "2")
    email = api.register(_email(), PASSWORD)["email"]
    for _ in range(2):
        assert _login(api.client, email, "wrong password").status_code == 401
    refused = _login(api.client, email, PASSWORD)
    _assert_throttled(refused, at_most=2)
    time.sleep(int(refused.headers["Retry-After"]) + 0.2)
    assert _login(api.client, email, PASSWORD).status_code == 200


def test_limits_are_settings(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_LOGIN_MAX_FAILURES_PER_ADDRESS", "2")
    for _ in range(2):
        assert _login(api.client, _email(), "wrong password").status_code == 401
    _assert_throttled(_login(api.client, _email(), "wrong password"), at_most=900)
    monkeypatch.setenv("AUTH_LOGIN_MAX_FAILURES_PER_ADDRESS", "0")  # 0: that counter is off
    assert _login(api.client, _email(), "wrong password").status_code == 401


# --- schema-per-tenant ----------------------------------------------------------------------


def test_each_tenant_schema_counts_its_own_failures(fresh_database: Callable[..., URL]) -> None:
    url = fresh_database("throttle_tenants")
    Migrator(REGISTRY, url).upgrade()
    for slug in ("acme", "globex"):
        SchemaTenantMigrator(core_db.CONFIG, url).create(slug)
    database = SQLAlchemyDatabase(core_db.CONFIG, url=url, multi_tenant=True)
    app = create_app(database, MyApiRouting(tenant_base_domain="example.test"))
    body = {"email": "same@example.com", "password": PASSWORD}
    wrong = {**body, "password": "wrong password"}
    with LiveServer(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        acme, globex = ({"Host": f"{t}.example.test"} for t in ("acme", "globex"))
        for host in (acme, globex):
            assert client.post("/auth/register", json=body, headers=host).status_code == 201
        for _ in range(5):
            assert client.post("/auth/login", json=wrong, headers=acme).status_code == 401
        _assert_throttled(client.post("/auth/login", json=body, headers=acme), at_most=900)
        # The same email in another tenant is another account with its own counter.
        assert client.post("/auth/login", json=body, headers=globex).status_code == 200
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            counts = {
                schema: conn.execute(
                    text(f"SELECT count(*) FROM {schema}.auth_login_failures")
                ).scalar_one()
                for schema in ("tenant_acme", "tenant_globex")
            }
    finally:
        engine.dispose()
    # acme: the account and the address; globex: its address slot, given back on success.
    assert counts == {"tenant_acme": 2, "tenant_globex": 1}


# --- across worker processes --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _uvicorn(app: str, url: URL, tmp_path: Path) -> Iterator[httpx.Client]:
    """``uvicorn APP.main:create_app --factory`` in its own process, on the database at url."""
    env = {
        **os.environ,
        URL_VARIABLE[app]: url.render_as_string(hide_password=False),
        "ENVIRONMENT": "test",
        "AUTH_LOGIN_MAX_FAILURES_PER_ACCOUNT": "5",
        "AUTH_LOGIN_MAX_FAILURES_PER_ADDRESS": "20",
        "AUTH_LOGIN_FAILURE_WINDOW_SECONDS": "900",
    }
    uvicorn = str(Path(sys.executable).parent / "uvicorn")
    port = _free_port()
    command = [uvicorn, f"{app}.main:create_app", "--factory", "--host", "127.0.0.1"]
    server = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"uvicorn {app} exited with {server.returncode}"
            assert time.monotonic() < deadline, f"uvicorn {app} did not start"
            try:
                if httpx.get(f"{base}/health/live", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.parametrize("app", sorted(APPS))
def test_failures_are_counted_across_worker_processes(
    app: str, database_at_head: Callable[..., URL], tmp_path: Path
) -> None:
    url = database_at_head(APPS[app])
    with ExitStack() as stack:
        first = stack.enter_context(_uvicorn(app, url, tmp_path))
        second = stack.enter_context(_uvicorn(app, url, tmp_path))
        email = _email()
        r = first.post("/auth/register", json={"email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text
        # Five failures spread over two processes: neither saw five on its own.
        for client in (first, second, first, second, first):
            assert _login(client, email, "wrong password").status_code == 401
        _assert_throttled(_login(second, email, PASSWORD), at_most=900)
        _assert_throttled(_login(first, email, PASSWORD), at_most=900)


# --- rehash on login ----------------------------------------------------------------------


def test_an_outdated_hash_is_replaced_on_login(api: Api) -> None:
    email = api.register(_email(), PASSWORD)["email"]
    weak = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8192, parallelism=1),))
    old_hash = weak.hash(PASSWORD)
    api.sql("UPDATE auth_users SET password_hash = :h WHERE email = :e", h=old_hash, e=email)

    assert _login(api.client, email, PASSWORD).status_code == 200
    (stored,) = api.sql("SELECT password_hash FROM auth_users WHERE email = :e", e=email)[0]
    assert stored != old_hash
    current = PasswordHash.recommended()
    assert current.verify(PASSWORD, stored)
    assert not current.current_hasher.check_needs_rehash(stored)
    # Already current: the next login keeps it.
    assert _login(api.client, email, PASSWORD).status_code == 200
    assert api.sql("SELECT password_hash FROM auth_users WHERE email = :e", e=email)[0][0] == stored


def test_a_wrong_password_does_not_rehash(api: Api) -> None:
    email = api.register(_email(), PASSWORD)["email"]
    weak = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8192, parallelism=1),))
    old_hash = weak.hash(PASSWORD)
    api.sql("UPDATE auth_users SET password_hash = :h WHERE email = :e", h=old_hash, e=email)
    assert _login(api.client, email, "wrong password").status_code == 401
    assert api.sql("SELECT password_hash FROM auth_users WHERE email = :e", e=email)[0][0] == (
        old_hash
    )


def test_dead_counters_are_swept_by_later_attempts(api: Api) -> None:
    """A flood of made-up e-mails cannot grow the counters table without bound: each attempt
    deletes a bounded batch of counters whose window has ended, and live ones stay."""
    table = "auth_login_failures"
    api.sql(
        f"INSERT INTO {table} (kind, key, window_started_at, failures) "
        "SELECT 'account', 'dead' || g || '@example.com', now() - interval '2 days', 1 "
        "FROM generate_series(1, 40) g"
    )
    live = _email()
    assert _login(api.client, live, "wrong password").status_code == 401

    def dead() -> int:
        rows = api.sql(f"SELECT count(*) FROM {table} WHERE key LIKE 'dead%'")
        return int(rows[0][0])

    assert dead() == 40 - 16  # one attempt: one batch
    for _ in range(2):
        assert _login(api.client, _email(), "wrong password").status_code == 401
    assert dead() == 0
    # The live counter is untouched: it still counts toward its account's limit.
    rows = api.sql(f"SELECT failures FROM {table} WHERE kind = 'account' AND key = :k", k=live)
    assert rows == [(1,)]
