"""Database-per-tenant for bibikos_db on a real PostgreSQL: each tenant its own database.

Tenant databases are fresh databases of the test server, migrated to head; the tenant
map is ``BIBIKOS_TENANT_URLS`` (or the same map passed to the settings). Every engine of
a test carries a unique ``application_name`` so ``pg_stat_activity`` counts exactly its
connections.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import URL
from typer.testing import CliRunner, Result

import bibikos_db
from auth.service import AuthService
from auth.tables import AuthUserTable
from bibikos_db import CONFIG, BibikosSettings
from db_kit.migrations.migrator import Migrator
from db_kit.tenancy import (
    StaticTenantUrlResolver,
    TenantDatabaseUnavailableError,
    TenantRoutedDatabase,
)
from db_shared import (
    ConfigurationError,
    Database,
    DatabaseUnavailableError,
    DuplicateEntryError,
    InvalidTenantError,
    TenantRequiredError,
    UnknownTenantError,
    tenant_context,
)
from db_tools.cli import build_app
from db_tools.testing import PostgresServer

MALICIOUS = ['x";DROP DATABASE postgres;--', "a b", "pg_catalog", "a" * 41, "Acme", "template1"]


def sql(url: URL, statement: str, **params: object) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def connections(server: PostgresServer, app: str, expected: int | None = None) -> int:
    """Server connections named ``app``; with ``expected``, wait (up to 5s) to reach it."""
    deadline = time.monotonic() + 5
    while True:
        with server._admin() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
            ).fetchone()
        assert row is not None
        found = int(str(row[0]))
        if expected is None or found == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


@pytest.fixture
def tenants(database_at_head: Callable[..., URL]) -> dict[str, URL]:
    """Three bibikos databases at head, one per tenant."""
    return {slug: database_at_head(CONFIG) for slug in ("us", "eu", "apac")}


def routed(urls: dict[str, URL], **settings: object) -> tuple[TenantRoutedDatabase, str]:
    """A ``TenantRoutedDatabase`` over ``urls`` configured as the env would, and its app name."""
    app = f"bibikos-tenants-{uuid.uuid4().hex[:10]}"
    loaded = BibikosSettings(
        tenant_urls={s: u.render_as_string(hide_password=False) for s, u in urls.items()},  # type: ignore[arg-type]
        application_name=app,
        **settings,  # type: ignore[arg-type]
    )
    return TenantRoutedDatabase(CONFIG, settings=loaded), app


# --- wiring -------------------------------------------------------------------------------


def test_tenant_database_is_a_database_built_from_bibikos_tenant_urls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert isinstance(bibikos_db.tenant_database, TenantRoutedDatabase)
    assert isinstance(bibikos_db.tenant_database, Database)
    monkeypatch.setenv(
        "BIBIKOS_TENANT_URLS",
        json.dumps({"us": "postgresql://app:s3cretpw@us-db/bibikos_us", "eu": "postgres://eu/b"}),
    )
    monkeypatch.setenv("BIBIKOS_DB_TENANT_MAX_ENGINES", "2")
    monkeypatch.setenv("BIBIKOS_DB_TENANT_CONNECTION_BUDGET", "8")
    CONFIG.reset()
    try:
        db = TenantRoutedDatabase(CONFIG)
        assert db.name == "bibikos"
        assert issubclass(db.model(AuthUserTable), AuthUserTable)
        cache = db.cache
        assert isinstance(cache.resolver, StaticTenantUrlResolver)
        assert cache.resolver.tenants == ("eu", "us")
        assert cache.resolver.resolve_sync("us").drivername == "postgresql+psycopg"
        assert (cache.max_engines, cache.connection_budget) == (2, 8)
        assert "s3cretpw" not in repr(CONFIG.settings()) + repr(cache.resolver)
        # A bad map is a clear error naming the variable, never echoing the password.
        monkeypatch.setenv("BIBIKOS_TENANT_URLS", '{"us": "mysql://app:s3cretpw@h/db"}')
        CONFIG.reset()
        with pytest.raises(ConfigurationError) as info:
            CONFIG.settings()
        assert "BIBIKOS_TENANT_URLS" in str(info.value)
        assert "s3cretpw" not in str(info.value)
    finally:
        CONFIG.reset()


# --- isolation ----------------------------------------------------------------------------


def test_identical_primary_keys_never_cross_tenants(tenants: dict[str, URL]) -> None:
    db, _ = routed(tenants)
    User = db.model(AuthUserTable)

    async def scenario() -> None:
        service = AuthService(db)
        for slug in ("us", "eu"):
            with tenant_context(slug):
                user = await service.register(f"owner@{slug}.example", "long enough 1")
                assert user.id == 1  # the same primary key in both tenant databases

        async def visit(i: int) -> None:
            slug = ("us", "eu")[i % 2]
            async with tenant_context(slug):
                await asyncio.sleep(0.001 * (i % 3))
                async with db.session() as s:
                    s.add(User(email=f"user{i}@{slug}.example"))
                await asyncio.sleep(0)
                async with db.session() as s:
                    emails = list(await s.scalars(select(User.email)))
                    database = await s.scalar(text("SELECT current_database()"))
                assert database == tenants[slug].database
                assert all(e.endswith(f"@{slug}.example") for e in emails), (slug, emails)

        await asyncio.gather(*(visit(i) for i in range(100)))
        await db.dispose()

    asyncio.run(scenario())
    for slug in ("us", "eu"):
        rows = sql(
            tenants[slug],
            "SELECT min(id), count(*), bool_and(email LIKE :p) FROM auth_users",
            p=f"%@{slug}.example",
        )
        assert rows == [(1, 51, True)], (slug, rows)
    assert sql(tenants["apac"], "SELECT count(*) FROM auth_users") == [(0,)]


def test_sync_units_of_work_commit_roll_back_and_translate(tenants: dict[str, URL]) -> None:
    db, _ = routed(tenants)
    User = db.model(AuthUserTable)
    with tenant_context("us"), db.sync_session() as s:
        s.add(User(email="ada@example.com"))
    with tenant_context("eu"), db.sync_session() as s:
        s.add(User(email="ada@example.com"))  # another database: no conflict

    def grace_then_ada_again() -> None:
        with db.sync_session() as s:
            s.add(User(email="grace@example.com"))
            s.flush()
            s.add(User(email="ada@example.com"))

    with tenant_context("us"):
        with pytest.raises(DuplicateEntryError) as info:
            grace_then_ada_again()
        assert info.value.columns == ("email",)
        with db.sync_session() as s:  # the failed unit of work left nothing behind
            assert list(s.scalars(select(User.email))) == ["ada@example.com"]
        db.ping_sync()
    with pytest.raises(TenantRequiredError):
        db.ping_sync()
    db.dispose_sync()


def test_no_tenant_unknown_tenant_and_bad_slugs(tenants: dict[str, URL]) -> None:
    db, _ = routed(tenants)

    async def scenario() -> None:
        with pytest.raises(TenantRequiredError):
            async with db.session():
                pass
        with tenant_context("mars"), pytest.raises(UnknownTenantError):
            async with db.session():
                pass
        for slug in MALICIOUS:
            with pytest.raises(InvalidTenantError):
                await db.cleanup(slug)
            with pytest.raises(InvalidTenantError), tenant_context(slug):
                pass

    asyncio.run(scenario())
    assert db.cache.stats().created == 0


# --- the engine cache under the Database ----------------------------------------------------


def test_eviction_while_a_session_is_open_lets_it_commit(
    tenants: dict[str, URL], postgres_server: PostgresServer
) -> None:
    db, app = routed(tenants, tenant_max_engines=2, tenant_connection_budget=4)
    User = db.model(AuthUserTable)

    async def scenario() -> None:
        opened = {"us": asyncio.Event(), "eu": asyncio.Event()}
        release = {"us": asyncio.Event(), "eu": asyncio.Event()}

        async def hold(slug: str) -> None:
            async with tenant_context(slug), db.session() as s:
                s.add(User(email=f"held@{slug}.example"))
                await s.flush()
                opened[slug].set()
                await release[slug].wait()

        holders = [asyncio.create_task(hold(slug)) for slug in ("us", "eu")]
        await asyncio.gather(*(e.wait() for e in opened.values()))

        async def newcomer() -> int:
            async with tenant_context("apac"), db.session() as s:
                return int(await s.scalar(select(func.count()).select_from(User)) or 0)

        apac = asyncio.create_task(newcomer())
        await asyncio.sleep(0.3)
        # Both slots busy: apac waits, and us (least recently used) is evicted, draining.
        assert not apac.done()
        assert db.cache.stats().draining == ("us",)
        assert connections(postgres_server, app) <= 4
        release["us"].set()
        await holders[0]  # the evicted tenant's session completed and committed
        assert await apac == 0  # its slot went to apac once us was disposed
        release["eu"].set()
        await holders[1]
        async with tenant_context("us"), db.session() as s:
            assert await s.scalar(select(User.email)) == "held@us.example"
        await db.dispose()

    asyncio.run(scenario())
    stats = db.cache.stats()
    assert stats.disposed == stats.created
    assert connections(postgres_server, app, expected=0) == 0


def test_cleanup_one_tenant_then_all(
    tenants: dict[str, URL], postgres_server: PostgresServer
) -> None:
    db, app = routed(tenants)

    async def use(slug: str) -> None:
        async with tenant_context(slug):
            await db.ping()

    async def scenario() -> None:
        for slug in tenants:
            await use(slug)
        assert connections(postgres_server, app, expected=3) == 3
        await db.cleanup("eu")  # dispose one tenant's engines
        assert db.cache.stats().live == ("us", "apac")
        assert connections(postgres_server, app, expected=2) == 2
        await use("eu")  # the next use builds eu's engines again
        await db.cleanup()  # dispose every tenant's engines
        assert db.cache.stats().live == ()

    asyncio.run(scenario())
    assert connections(postgres_server, app, expected=0) == 0


def test_a_tenant_whose_database_is_down_fails_alone(
    tenants: dict[str, URL], closed_port: int, fresh_database: Callable[..., URL]
) -> None:
    gone = fresh_database("bibikos_gone")
    urls = {
        "us": tenants["us"],
        "down": URL.create(
            "postgresql", "app", "s3cretpw", "127.0.0.1", closed_port, "bibikos_down"
        ),
        "gone": gone,
    }
    # More concurrent requests than a tenant's pool holds: SQLAlchemy's queue keeps the
    # extra ones of a dead tenant waiting for pool_timeout, which is kept short here.
    db, _ = routed(urls, pool_timeout=2)
    slugs = ["us", "down", "gone"] * 5

    async def attempt(slug: str) -> tuple[float, object]:
        started = time.monotonic()
        try:
            async with tenant_context(slug), db.session() as s:
                found: object = await s.scalar(text("SELECT current_database()"))
        except Exception as exc:
            found = exc
        return time.monotonic() - started, found

    async def scenario() -> None:
        async with tenant_context("gone"):
            await db.ping()  # it worked once: its engines are cached
        await db.cleanup("gone")  # then its database disappears under the running app
        drop = create_engine(gone.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with drop.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{gone.database}" WITH (FORCE)'))
        drop.dispose()

        results = await asyncio.gather(*(attempt(slug) for slug in slugs))
        for slug, (seconds, result) in zip(slugs, results, strict=True):
            if slug == "us":
                assert result == tenants["us"].database
                assert seconds < 1.5, "a healthy tenant must not wait for a dead one"
                continue
            assert isinstance(result, DatabaseUnavailableError), (slug, result)
            assert isinstance(result, TenantDatabaseUnavailableError)
            assert result.tenant == slug
            assert f"Tenant {slug!r}" in str(result)
            assert "s3cretpw" not in str(result)
        errors = {slug: str(result) for slug, (_, result) in zip(slugs, results, strict=True)}
        assert f"127.0.0.1:{closed_port}" in errors["down"]
        assert "does not exist" in errors["gone"]
        async with tenant_context("down"):
            with pytest.raises(DatabaseUnavailableError):
                await db.ping()
        async with tenant_context("us"):
            await db.ping()
        await db.dispose()

    asyncio.run(scenario())


# --- the CLI ------------------------------------------------------------------------------


@pytest.fixture
def cli_tenants(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, URL]]:
    """``BIBIKOS_TENANT_URLS`` naming two databases that do not exist yet (password set)."""
    base = postgres_server.admin_url
    password = base.password or "s3cretpw"  # the embedded server trusts loopback
    urls = {}
    for slug in ("us", "eu"):
        name = f"bibikos_cli_{slug}_{uuid.uuid4().hex[:8]}"
        postgres_server.created.append(name)  # dropped at the end of the run if still there
        urls[slug] = base.set(database=name, password=password)
    monkeypatch.setenv(
        "BIBIKOS_TENANT_URLS",
        json.dumps({s: u.render_as_string(hide_password=False) for s, u in urls.items()}),
    )
    CONFIG.reset()
    yield urls
    CONFIG.reset()


def invoke(*args: str, input: str | None = None) -> Result:
    result = CliRunner().invoke(build_app(), ["bibikos", "tenants", *args], input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def database_exists(url: URL) -> bool:
    rows = sql(
        url.set(database="postgres"), "SELECT 1 FROM pg_database WHERE datname = :n", n=url.database
    )
    return bool(rows)


def test_cli_create_list_migrate_drop(cli_tenants: dict[str, URL]) -> None:
    us, eu = cli_tenants["us"], cli_tenants["eu"]
    secret = f":{us.password}@"
    head = Migrator(CONFIG).heads()[0]

    listed = invoke("list")
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("missing") == 2
    assert "2 tenant database(s) in BIBIKOS_TENANT_URLS" in listed.output

    created = invoke("create", "us")
    assert created.exit_code == 0, created.output
    assert "created and migrated" in created.output
    assert head in created.output
    assert database_exists(us)
    assert sql(us, "SELECT version_num FROM alembic_version") == [(head,)]
    again = invoke("create", "us")
    assert again.exit_code == 0
    assert "up to date" in again.output

    listed = invoke("list")
    assert "up to date" in listed.output
    assert head in listed.output
    assert "missing" in listed.output  # eu

    # eu's database does not exist: migrate reports it, migrates the rest, exits 1.
    Migrator(CONFIG, us).downgrade("base")
    failed = invoke("migrate")
    assert failed.exit_code == 1, failed.output
    assert "1 migrated, 0 already at head, 1 failed" in failed.output
    assert "eu: failed" in failed.output
    assert "does not exist" in failed.output

    assert invoke("create", "eu").exit_code == 0
    assert database_exists(eu)
    done = invoke("migrate")
    assert done.exit_code == 0, done.output
    assert "0 migrated, 2 already at head, 0 failed" in done.output

    # A tenant not in the map, by URL.
    extra = us.set(database=f"bibikos_cli_extra_{uuid.uuid4().hex[:8]}")
    extra_url = extra.render_as_string(hide_password=False)
    out = invoke("create", "apac", "--url", extra_url)
    assert out.exit_code == 0, out.output
    assert database_exists(extra)
    unknown = invoke("create", "mars")
    assert unknown.exit_code == 1
    # Not in the map and no registry to put it in: the error names both ways out.
    assert "registry is not migrated yet" in unknown.output
    assert "BIBIKOS_TENANT_URLS" in unknown.output

    refused = invoke("drop", "us", input="n\n")
    assert refused.exit_code == 1
    assert "aborted" in refused.output
    assert database_exists(us)
    dropped = invoke("drop", "us", "--yes")
    assert dropped.exit_code == 0, dropped.output
    assert "dropped" in dropped.output
    assert "Remove us from BIBIKOS_TENANT_URLS" in dropped.output
    assert not database_exists(us)
    assert invoke("drop", "apac", "--url", extra_url, "--yes").exit_code == 0
    assert not database_exists(extra)
    assert invoke("drop", "eu", "--yes", "--force").exit_code == 0

    listed = invoke("list")
    assert listed.output.count("missing") == 2
    for result in (listed, created, failed, done, out, dropped):
        assert secret not in result.output


def test_cli_refuses_bad_slugs_and_the_main_database_before_any_sql(
    cli_tenants: dict[str, URL], closed_port: int
) -> None:
    # A URL nothing answers at: reaching a server would say "Cannot reach PostgreSQL".
    nowhere = f"postgresql://app:s3cretpw@127.0.0.1:{closed_port}/bibikos_x"
    for slug in MALICIOUS:
        for args in (("create", slug, "--url", nowhere), ("drop", slug, "--url", nowhere, "--yes")):
            result = invoke(*args)
            assert result.exit_code == 1, result.output
            assert "Invalid tenant slug" in result.output
            assert "Cannot reach" not in result.output
            assert "s3cretpw" not in result.output
    main = CONFIG.settings().validated_url()
    assert main is not None
    result = invoke("drop", "evil", "--url", main.render_as_string(hide_password=False), "--yes")
    assert result.exit_code == 1
    assert "is the bibikos main database" in result.output
    template = invoke("create", "evil", "--url", nowhere.replace("bibikos_x", "template1"))
    assert template.exit_code == 1
    assert "Refusing to use the 'template1' database" in template.output
