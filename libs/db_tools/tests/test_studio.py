"""`db NAME studio`: sqladmin over a db lib's models, on a real uvicorn and a real PostgreSQL.

The browser test drives Debian's Chromium headless (installed here as root when missing,
else skipped with the reason) and saves a screenshot under ``test-artifacts/``. Writes are
checked over HTTP: refused (403, no row changed) without ``write``, applied with it; and
the studio's engine itself refuses writes, so a view that let one through would still fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from harness import LiveServer  # tests/api/harness.py (on pytest's pythonpath)
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from bibikos_db.config import CONFIG as BIBIKOS
from core_db.config import CONFIG, REGISTRY
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.schema_tenants import SchemaTenantMigrator
from db_shared.errors import ConfigurationError
from db_shared.tenancy import InvalidTenantError
from db_tools.cli import database_app
from db_tools.studio import (
    MISSING_EXTRA,
    Studio,
    StudioTarget,
    build_studio,
    exposure_warning,
    is_loopback,
    studio_engine,
)
from db_tools.testing import debian_program, run_sql

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
BROWSER_TIMEOUT = 90  # seconds per headless Chromium run
HTTP_TIMEOUT = 30
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (the address the warning is about)


@pytest.fixture
def core_url(database_at_head: Callable[..., URL]) -> URL:
    """A fresh core database with its registry and default schema at head."""
    url = database_at_head(CONFIG)
    Migrator(REGISTRY, url).upgrade("head")
    return url


@contextlib.contextmanager
def serving(studio: Studio) -> Iterator[httpx.Client]:
    """The studio on a real uvicorn (free loopback port); stops when the block ends."""
    with (
        LiveServer(studio.app) as base,
        httpx.Client(  # type: ignore[arg-type]
            base_url=base, timeout=HTTP_TIMEOUT, follow_redirects=False
        ) as client,
    ):
        yield client


def _roles(url: URL) -> list[str]:
    return [r[0] for r in run_sql(url, "SELECT name FROM roles ORDER BY name")]


# the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's Chromium (installed once per session when missing and root)."""
    return debian_program("chromium", "chromium", "/usr/bin/chromium")


def _browse(chromium: str, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="studio_chromium_") as profile:
        return subprocess.run(
            [
                chromium, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True, text=True, timeout=BROWSER_TIMEOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip


def test_chromium_lists_tables_and_shows_a_row(chromium: str, core_url: URL) -> None:
    run_sql(core_url, "INSERT INTO auth_users (email) VALUES ('studio-ada@example.com')")
    studio = build_studio(CONFIG, url=core_url)
    with serving(studio) as client:
        base = str(client.base_url).rstrip("/")
        index = _browse(chromium, "--dump-dom", f"{base}/admin/")
        assert index.returncode == 0, index.stderr[-2000:]
        tables = [*CONFIG.metadata.tables.values(), *REGISTRY.metadata.tables.values()]
        assert len(tables) > 10
        for table in tables:
            assert f"({table.name})" in index.stdout, f"{table.name} missing from the table list"
        assert "read-only" in index.stdout

        users = f"{base}/admin/auth-user/list"
        listed = _browse(chromium, "--dump-dom", users)
        assert listed.returncode == 0, listed.stderr[-2000:]
        assert "studio-ada@example.com" in listed.stdout

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "studio.png"
        shot.unlink(missing_ok=True)
        taken = _browse(chromium, f"--screenshot={shot}", "--window-size=1280,900", users)
        assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    print(f"studio screenshot: {shot}")


def test_every_table_lists_and_text_columns_search(core_url: URL) -> None:
    from sqladmin.helpers import slugify_class_name

    run_sql(
        core_url, "INSERT INTO auth_users (email) VALUES ('findme@example.com'), ('other@x.io')"
    )
    classes = [m.class_ for base in (CONFIG.base, REGISTRY.base) for m in base.registry.mappers]
    with serving(build_studio(CONFIG, url=core_url)) as client:
        for cls in classes:
            page = client.get(f"/admin/{slugify_class_name(cls.__name__)}/list")
            assert page.status_code == 200, f"{cls.__name__}: {page.status_code}"
        found = client.get("/admin/auth-user/list", params={"search": "FINDME"}).text
        assert "findme@example.com" in found
        assert "other@x.io" not in found


def test_credentials_are_not_shown_or_exported(core_url: URL) -> None:
    run_sql(
        core_url,
        "INSERT INTO auth_users (email, password_hash) VALUES ('h@example.com', '$argon2id$SECRET')",
    )
    user_id = run_sql(core_url, "SELECT id FROM auth_users WHERE email = 'h@example.com'")[0][0]
    with serving(build_studio(CONFIG, url=core_url)) as client:
        listed = client.get("/admin/auth-user/list").text
        details = client.get(f"/admin/auth-user/details/{user_id}").text
        exported = client.get("/admin/auth-user/export/csv").text
        sessions = client.get("/admin/auth-session/list").text
    assert "h@example.com" in listed
    assert "h@example.com" in details
    assert "h@example.com" in exported
    for page in (listed, details, exported):
        assert "$argon2id$SECRET" not in page
        assert "password_hash" not in page
    assert "token_hash" not in sessions


# read-only and --write ---------------------------------------------------------------------


def test_read_only_studio_refuses_every_write(core_url: URL) -> None:
    run_sql(core_url, "INSERT INTO roles (name) VALUES ('keep')")
    role_id = run_sql(core_url, "SELECT id FROM roles WHERE name = 'keep'")[0][0]
    with serving(build_studio(CONFIG, url=core_url)) as client:
        assert client.get("/admin/role/list").status_code == 200
        assert client.get("/admin/role/create").status_code == 403
        assert client.post("/admin/role/create", data={"name": "evil"}).status_code == 403
        edit = client.post(f"/admin/role/edit/{role_id}", data={"name": "renamed"})
        assert edit.status_code == 403
        assert client.delete("/admin/role/delete", params={"pks": role_id}).status_code == 403
        assert client.post(
            "/admin/role/import", files={"file": ("r.csv", b"name\nx\n")}
        ).status_code in (403, 404)
    assert _roles(core_url) == ["keep"]


def test_read_only_engine_refuses_writes_in_postgresql(core_url: URL) -> None:
    """The second line of defence: even SQL the views never send is refused by the server."""
    engine = studio_engine(CONFIG.settings(), StudioTarget(core_url))

    async def insert() -> None:
        try:
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO roles (name) VALUES ('sneaky')"))
        finally:
            await engine.dispose()

    with pytest.raises(DBAPIError) as caught:
        asyncio.run(insert())
    assert getattr(caught.value.orig, "sqlstate", None) == "25006"  # read_only_sql_transaction
    assert _roles(core_url) == []


def test_write_mode_creates_edits_and_deletes(core_url: URL) -> None:
    with serving(build_studio(CONFIG, url=core_url, write=True)) as client:
        assert client.get("/admin/role/create").status_code == 200
        created = client.post("/admin/role/create", data={"name": "editor", "description": ""})
        assert created.status_code == 302, created.text[-2000:]
        assert _roles(core_url) == ["editor"]
        role_id, created_at = run_sql(
            core_url,
            "SELECT id, to_char(created_at, 'YYYY-MM-DD HH24:MI:SS') FROM roles WHERE name = 'editor'",
        )[0]
        # What the edit form posts back: every field, pre-filled.
        form = {"name": "author", "description": "", "created_at": created_at}
        edited = client.post(f"/admin/role/edit/{role_id}", data=form)
        assert edited.status_code == 302, edited.text[-2000:]
        assert _roles(core_url) == ["author"]
        assert client.delete("/admin/role/delete", params={"pks": role_id}).status_code == 200
        assert _roles(core_url) == []
        # The registry stays read-only: tenants are created with `db core tenants create`.
        assert client.post("/admin/tenant/create", data={"slug": "x"}).status_code == 403


# tenants -----------------------------------------------------------------------------------


def test_tenant_studio_shows_that_tenants_schema_only(core_url: URL) -> None:
    SchemaTenantMigrator(CONFIG, core_url).create("acme")
    run_sql(core_url, "INSERT INTO tenant_acme.auth_users (email) VALUES ('acme-only@example.com')")
    run_sql(core_url, "INSERT INTO public.auth_users (email) VALUES ('default-only@example.com')")

    studio = build_studio(CONFIG, url=core_url, tenant="acme")
    assert studio.target.schema == "tenant_acme"
    with serving(studio) as client:
        page = client.get("/admin/auth-user/list")
        assert page.status_code == 200
        assert "acme-only@example.com" in page.text
        assert "default-only@example.com" not in page.text
        assert "tenant acme" in client.get("/admin/").text

    with serving(build_studio(CONFIG, url=core_url)) as client:
        page = client.get("/admin/auth-user/list")
        assert "default-only@example.com" in page.text
        assert "acme-only@example.com" not in page.text


def test_unknown_or_malformed_tenant_fails_before_serving(core_url: URL) -> None:
    with pytest.raises(ConfigurationError, match=r"Unknown tenant 'nope'.*tenants create nope"):
        build_studio(CONFIG, url=core_url, tenant="nope")
    with pytest.raises(InvalidTenantError):
        build_studio(CONFIG, url=core_url, tenant="Robert'); DROP")


def test_database_per_tenant_studio_opens_that_tenants_database(
    database_at_head: Callable[..., URL], monkeypatch: pytest.MonkeyPatch
) -> None:
    us = database_at_head(BIBIKOS)
    run_sql(us, "INSERT INTO auth_users (email) VALUES ('us-only@example.com')")
    monkeypatch.setenv("BIBIKOS_TENANT_URLS", f'{{"us": "{us.render_as_string(False)}"}}')
    BIBIKOS.reset()
    try:
        studio = build_studio(BIBIKOS, tenant="us")
        assert studio.target.url.database == us.database
        assert studio.target.schema is None
        with serving(studio) as client:
            assert "us-only@example.com" in client.get("/admin/auth-user/list").text
            assert "(gym_members)" in client.get("/admin/").text
        with pytest.raises(
            ConfigurationError, match=r"Unknown tenant 'eu': add it to BIBIKOS_TENANT_URLS"
        ):
            build_studio(BIBIKOS, tenant="eu")
    finally:
        BIBIKOS.reset()


def test_tenant_on_a_database_without_tenants_is_refused(core_url: URL) -> None:
    with pytest.raises(ConfigurationError, match=r"core registry database has no tenants"):
        build_studio(REGISTRY, url=core_url, tenant="acme")


# the command -------------------------------------------------------------------------------


@pytest.fixture
def core_env(core_url: URL, monkeypatch: pytest.MonkeyPatch) -> Iterator[URL]:
    """DATABASE_URL pointed at ``core_url`` for commands run in this process."""
    monkeypatch.setenv(CONFIG.settings_class.url_variable, core_url.render_as_string(False))
    CONFIG.reset()
    yield core_url
    CONFIG.reset()


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(database_app(CONFIG), list(args))
    return result.exit_code, result.output


def test_cli_refuses_bad_tenants_in_one_line(core_env: URL) -> None:
    code, out = _cli("studio", "--tenant", "nope")
    assert code == 1
    assert "Unknown tenant 'nope'" in out
    assert "Traceback" not in out
    code, out = _cli("studio", "--tenant", "Bad-Slug")
    assert code == 1
    assert "Invalid tenant slug" in out
    assert "Traceback" not in out


def test_cli_names_an_unreachable_server_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # released: nothing listens there
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:s3cretpw@127.0.0.1:{port}/app")
    CONFIG.reset()
    try:
        code, out = _cli("studio", "--port", "1")
    finally:
        CONFIG.reset()
    assert code == 1
    assert f"Cannot reach PostgreSQL at 127.0.0.1:{port}" in out
    assert "s3cretpw" not in out
    assert "Traceback" not in out


def test_cli_warns_on_a_non_loopback_host_and_names_a_busy_port(core_env: URL) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out = _cli("studio", "--host", ALL_INTERFACES, "--port", str(port))
    assert code == 1
    assert "warning:" in out
    assert "no login" in out
    assert f"Cannot listen on {ALL_INTERFACES}:{port}" in out
    assert "--port" in out


def test_cli_write_is_refused_in_production(core_env: URL, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    CONFIG.reset()
    code, out = _cli("studio", "--write")
    assert code == 1
    assert "Refusing `db core studio --write`: ENVIRONMENT=production" in out


def test_loopback_detection() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert is_loopback(host)
        assert exposure_warning(host) is None
    for host in (ALL_INTERFACES, "::", "192.168.1.5", "studio.example.com"):
        assert not is_loopback(host)
        assert "no login" in (exposure_warning(host) or "")


def test_missing_extra_names_the_install_command(
    core_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sqladmin", None)  # what an environment without it sees
    with pytest.raises(ConfigurationError) as caught:
        build_studio(CONFIG, url=core_url)
    assert str(caught.value) == MISSING_EXTRA
    assert "uv sync --all-packages" in MISSING_EXTRA
    assert "db-kit[studio]" in MISSING_EXTRA


def _listening_addresses(port: int) -> set[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp{,6}), e.g. {"127.0.0.1"}."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    if len(address) == 8:
                        found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                    else:
                        found.add(address)
    return found


def test_cli_serves_on_loopback_by_default(core_url: URL) -> None:
    """`db core studio` end to end in its own process: 127.0.0.1 only, pages served."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        CONFIG.settings_class.url_variable: core_url.render_as_string(False),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "db_tools", "core", "studio", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        banner = ""
        while "open http" not in banner:
            line = proc.stdout.readline()
            assert line, f"the studio exited: {banner}"
            banner += line
        assert f"open http://127.0.0.1:{port}/admin/" in banner
        assert "read-only" in banner
        assert "warning" not in banner
        assert f"database: {core_url.render_as_string(hide_password=True)}\n" in banner
        page = None
        deadline = time.monotonic() + HTTP_TIMEOUT
        while page is None and proc.poll() is None and time.monotonic() < deadline:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/admin/", timeout=HTTP_TIMEOUT)
            except httpx.ConnectError:
                time.sleep(0.1)  # the banner is printed just before uvicorn listens
        assert page is not None
        assert page.status_code == 200
        assert "(auth_users)" in page.text
        assert _listening_addresses(port) == {"127.0.0.1"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
