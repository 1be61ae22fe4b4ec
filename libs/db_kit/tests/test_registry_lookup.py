"""RegistryLookup on a real PostgreSQL: cached answers that a registry change empties at once.

The registry is core_db's (``core.tenants``, ``core.tenant_domains``) or bibikos_db's
control schema, migrated into fresh databases; changes are made with plain SQL, as an
operator would, and reach the lookup through the registry's NOTIFY triggers only.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import URL

import bibikos_db
import core_db
from core_db.config import REGISTRY
from db_kit.database import SQLAlchemyDatabase
from db_kit.engine import Engines, build_engines
from db_kit.migrations.migrator import Migrator
from db_kit.settings import DatabaseSettings
from db_kit.tenancy import RegistryLookup, TenantEntry, TenantRoutedDatabase, TenantStatus
from db_kit.tenancy.lookup import REGISTRY_TTL
from db_shared import (
    ConfigurationError,
    DatabaseUnavailableError,
    TenantSuspendedError,
    tenant_context,
)
from db_tools.testing import run_sql, unused_port

BibikosTenant = bibikos_db.CONFIG.database_tenancy.registry_model  # type: ignore[union-attr]


def app_name() -> str:
    return f"lookup-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def registry_url(fresh_database: Callable[..., URL]) -> URL:
    """A database with core_db's registry and two tenant rows (no tenant schemas needed)."""
    url = fresh_database("registry")
    Migrator(REGISTRY, url).upgrade()
    for slug, status in (("acme", "active"), ("globex", "active")):
        run_sql(
            url,
            "INSERT INTO core.tenants (slug, name, status, schema_name) "
            "VALUES (:s, :s, :st, :schema)",
            s=slug,
            schema=f"tenant_{slug}",
            st=status,
        )
    run_sql(
        url,
        "INSERT INTO core.tenant_domains (domain, tenant_id) "
        "SELECT 'shop.acme.test', id FROM core.tenants WHERE slug = 'acme'",
    )
    return url


class Counted:
    """The registry's engines, counting the statements lookups send."""

    def __init__(self, url: URL, app: str) -> None:
        self.app = app
        self.engines: Engines = build_engines(DatabaseSettings(application_name=app), url)
        self.queries = 0

        @event.listens_for(self.engines.async_engine.sync_engine, "before_cursor_execute")
        def count(*args: object) -> None:
            self.queries += 1

    def lookup(self, **kwargs: object) -> RegistryLookup:
        return RegistryLookup(
            core_db.CONFIG.tenancy.model,  # type: ignore[union-attr]
            lambda: self.engines,
            application_name=self.app,
            **kwargs,  # type: ignore[arg-type]
        )

    async def dispose(self) -> None:
        await self.engines.async_engine.dispose()
        self.engines.sync_engine.dispose()


@pytest.fixture
def counted(registry_url: URL) -> Iterator[Counted]:
    found = Counted(registry_url, app_name())
    yield found
    asyncio.run(found.dispose())


async def until(check: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> float:
    """Seconds until ``check()`` holds; fails after ``timeout``."""
    started = time.monotonic()
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"still false after {timeout} s")
        await asyncio.sleep(0.01)


def set_status(url: URL, slug: str, status: str) -> None:
    run_sql(url, "UPDATE core.tenants SET status = :st WHERE slug = :s", st=status, s=slug)


def listener_pids(url: URL, app: str) -> list[int]:
    rows = run_sql(
        url,
        "SELECT pid FROM pg_stat_activity WHERE application_name = :a AND datname = :d",
        a=f"{app} registry listener",
        d=url.database,
    )
    return [int(pid) for (pid,) in rows]


# ---------------------------------------------------------------------------------------------


def test_answers_tenants_and_hosts_and_caches_them_while_listening(
    counted: Counted, registry_url: URL
) -> None:
    async def scenario() -> None:
        lookup = counted.lookup()
        assert await lookup.tenant("acme") == TenantEntry(
            "acme", TenantStatus.ACTIVE, "tenant_acme"
        )
        await until(lambda: lookup.listening)
        await lookup.tenant("acme")  # read before the listener was up: not kept, so again
        assert await lookup.tenant("nope") is None
        assert await lookup.tenant_for_host("shop.acme.test") == "acme"
        assert await lookup.tenant_for_host("SHOP.acme.test.") == "acme"  # normalised
        assert await lookup.tenant_for_host("elsewhere.test") is None
        assert await lookup.tenant_for_host("x" * 300) is None  # never queried
        before = counted.queries
        for _ in range(50):
            assert (await lookup.tenant("acme")) is not None
            assert await lookup.tenant("nope") is None  # negative answers are cached too
            assert await lookup.tenant_for_host("shop.acme.test") == "acme"
        assert counted.queries == before
        await lookup.aclose()

    asyncio.run(scenario())


def test_a_change_is_seen_at_once_not_after_a_ttl(counted: Counted, registry_url: URL) -> None:
    async def scenario() -> None:
        lookup = counted.lookup(ttl=300.0)  # only a notification can explain a fresh answer
        await lookup.tenant("acme")
        await until(lambda: lookup.listening)
        assert (await lookup.tenant("acme")).status is TenantStatus.ACTIVE  # type: ignore[union-attr]
        assert await lookup.tenant_for_host("new.acme.test") is None

        async def status() -> TenantStatus | None:
            entry = await lookup.tenant("acme")
            return None if entry is None else entry.status

        await asyncio.to_thread(set_status, registry_url, "acme", "suspended")
        seen = await until(lambda: _is(status(), TenantStatus.SUSPENDED), timeout=1.0)
        assert seen < 1.0
        run_sql(
            registry_url,
            "INSERT INTO core.tenant_domains (domain, tenant_id) "
            "SELECT 'new.acme.test', id FROM core.tenants WHERE slug = 'acme'",
        )
        await until(lambda: _is(lookup.tenant_for_host("new.acme.test"), "acme"), timeout=1.0)
        run_sql(registry_url, "DELETE FROM core.tenants WHERE slug = 'acme'")
        await until(lambda: _is(lookup.tenant("acme"), None), timeout=1.0)
        assert await lookup.tenant_for_host("new.acme.test") is None
        await lookup.aclose()

    asyncio.run(scenario())


async def _is(value: Awaitable[object], expected: object) -> bool:
    return (await value) == expected


def test_nothing_is_cached_while_the_listener_cannot_listen(
    counted: Counted, registry_url: URL
) -> None:
    dead = registry_url.set(host="127.0.0.1", port=unused_port())

    async def scenario() -> None:
        lookup = counted.lookup(listen_url=lambda: dead)
        for _ in range(3):
            assert (await lookup.tenant("globex")).status is TenantStatus.ACTIVE  # type: ignore[union-attr]
        await asyncio.sleep(0.2)  # the listener has failed by now, and keeps retrying
        assert not lookup.listening
        before = counted.queries
        await lookup.tenant("globex")
        await lookup.tenant_for_host("shop.acme.test")
        assert counted.queries == before + 2  # each lookup asked the registry
        # So a change is seen by the very next lookup, notification or not.
        set_status(registry_url, "globex", "suspended")
        assert (await lookup.tenant("globex")).status is TenantStatus.SUSPENDED  # type: ignore[union-attr]
        await lookup.aclose()

    asyncio.run(scenario())


def test_listener_killed_then_back_answers_stay_right(counted: Counted, registry_url: URL) -> None:
    async def scenario() -> None:
        lookup = counted.lookup(ttl=300.0)
        await lookup.tenant("acme")
        await until(lambda: lookup.listening)
        assert lookup.connections == 1
        (pid,) = listener_pids(registry_url, counted.app)
        run_sql(registry_url, "SELECT pg_terminate_backend(:p)", p=pid)
        await until(lambda: not lookup.listening, timeout=2.0)
        # Down: a change made now sends its notification to nobody, yet it is seen.
        set_status(registry_url, "acme", "suspended")
        before = counted.queries
        assert (await lookup.tenant("acme")).status is TenantStatus.SUSPENDED  # type: ignore[union-attr]
        assert counted.queries == before + 1
        # It reconnects (0.5 s back-off) on a new backend, and caching resumes.
        await until(lambda: lookup.listening, timeout=5.0)
        assert lookup.connections == 2
        assert listener_pids(registry_url, counted.app) not in ([], [pid])
        await lookup.tenant("acme")
        before = counted.queries
        await lookup.tenant("acme")
        assert counted.queries == before
        set_status(registry_url, "acme", "active")
        await until(
            lambda: _is(_status(lookup, "acme"), TenantStatus.ACTIVE),
            timeout=1.0,
        )
        await lookup.aclose()
        # aclose ends the listener's connection.
        await until(lambda: not listener_pids(registry_url, counted.app), timeout=2.0)

    asyncio.run(scenario())


async def _status(lookup: RegistryLookup, slug: str) -> TenantStatus | None:
    entry = await lookup.tenant(slug)
    return None if entry is None else entry.status


def test_the_cache_is_bounded_and_expires(counted: Counted) -> None:
    async def scenario() -> None:
        lookup = counted.lookup(max_entries=100, ttl=0.3)
        await lookup.tenant("acme")
        await until(lambda: lookup.listening)
        for i in range(500):
            assert await lookup.tenant_for_host(f"probe-{i}.example.test") is None
        assert len(lookup._cache) == 100  # the most recent 100 answers
        before = counted.queries
        await lookup.tenant_for_host("probe-499.example.test")
        assert counted.queries == before
        await asyncio.sleep(0.35)  # past the TTL backstop: answered, and read again aside
        await lookup.tenant_for_host("probe-499.example.test")
        await until(lambda: counted.queries == before + 1)
        await lookup.tenant_for_host("probe-499.example.test")  # the fresh answer
        assert counted.queries == before + 1
        await asyncio.sleep(0.65)  # past twice the TTL: gone, read inline
        await lookup.tenant_for_host("probe-499.example.test")
        assert counted.queries == before + 2
        await lookup.aclose()

    asyncio.run(scenario())
    assert REGISTRY_TTL == 5.0


def test_an_unreachable_registry_is_database_unavailable(closed_port: int) -> None:
    down = URL.create(
        "postgresql+psycopg", username="u", password="pw", host="127.0.0.1",
        port=closed_port, database="gone",
    )  # fmt: skip
    database = SQLAlchemyDatabase(core_db.CONFIG, url=down, multi_tenant=True)

    async def scenario() -> None:
        with pytest.raises(DatabaseUnavailableError) as info:
            await database.tenant_exists("acme")
        assert "pw" not in str(info.value)
        with pytest.raises(DatabaseUnavailableError):
            await database.tenant_for_host("shop.acme.test")
        await database.dispose()

    asyncio.run(scenario())


def test_a_registry_never_migrated_is_a_configuration_error(
    fresh_database: Callable[..., URL],
) -> None:
    database = SQLAlchemyDatabase(core_db.CONFIG, url=fresh_database("empty"), multi_tenant=True)

    async def scenario() -> None:
        with pytest.raises(ConfigurationError) as info:
            await database.tenant_exists("acme")
        assert "registry migrate" in str(info.value)
        await database.dispose()

    asyncio.run(scenario())


def test_schema_database_tenant_exists_follows_the_status(registry_url: URL) -> None:
    database = SQLAlchemyDatabase(core_db.CONFIG, url=registry_url, multi_tenant=True)
    run_sql(
        registry_url,
        "INSERT INTO core.tenants (slug, name, status, schema_name) "
        "VALUES ('initech', 'Initech', 'provisioning', 'tenant_initech')",
    )

    async def scenario() -> None:
        assert await database.tenant_exists("acme") is True
        assert await database.tenant_exists("initech") is False  # still provisioning
        assert await database.tenant_exists("nope") is False
        assert await database.tenant_for_host("shop.acme.test") == "acme"
        lookup = database.registry_lookup
        assert lookup is not None
        await until(lambda: lookup.listening)
        set_status(registry_url, "acme", "suspended")
        with pytest.raises(TenantSuspendedError) as info:
            await until(lambda: _suspended(database, "acme"), timeout=1.0)
        assert info.value.code == "tenant_suspended"
        await database.dispose()  # stops the listener too
        assert not lookup.listening

    asyncio.run(scenario())
    assert listener_pids(registry_url, "data-layer") == []


async def _suspended(database: SQLAlchemyDatabase, slug: str) -> bool:
    await database.tenant_exists(slug)  # raises TenantSuspendedError once it is
    return False


# database-per-tenant ----------------------------------------------------------------------


@pytest.fixture
def control(fresh_database: Callable[..., URL], database_at_head: Callable[..., URL]) -> URL:
    """A control database with bibikos' registry, and tenant ``acme`` in a database of its own."""
    url = fresh_database("control")
    Migrator(bibikos_db.CONFIG.registry, url).upgrade()  # type: ignore[arg-type]
    acme = database_at_head(bibikos_db.CONFIG)
    run_sql(
        url,
        "INSERT INTO control.tenants (slug, name, status, database_name) "
        "VALUES ('acme', 'Acme', 'active', :d)",
        d=acme.database,
    )
    return url


async def _served(database: TenantRoutedDatabase, slug: str) -> bool:
    try:
        return await database.tenant_exists(slug)
    except TenantSuspendedError:
        return False


def test_routed_database_resolves_registry_tenants_and_drops_their_engines(control: URL) -> None:
    settings = bibikos_db.CONFIG.settings_class(
        url=control.render_as_string(hide_password=False), multi_tenant=True
    )
    database = TenantRoutedDatabase(bibikos_db.CONFIG, settings=settings)
    assert database.uses_registry
    plain = bibikos_db.CONFIG.settings_class(url=control.render_as_string(hide_password=False))
    assert not TenantRoutedDatabase(bibikos_db.CONFIG, settings=plain).uses_registry

    async def scenario() -> None:
        assert await database.tenant_exists("acme") is True
        assert await database.tenant_exists("nope") is False
        with tenant_context("acme"):
            async with database.session() as session:
                assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
        assert database.cache.stats().live == ("acme",)
        lookup = database.registry_lookup
        assert lookup is not None
        await until(lambda: lookup.listening)
        run_sql(control, "UPDATE control.tenants SET status = 'suspended' WHERE slug = 'acme'")
        # The change drops the tenant's (idle) engines, and it is refused.
        await until(lambda: database.cache.stats().live == (), timeout=1.0)
        with pytest.raises(TenantSuspendedError):
            await database.tenant_exists("acme")
        with pytest.raises(TenantSuspendedError), tenant_context("acme"):
            async with database.session():
                pass
        run_sql(control, "UPDATE control.tenants SET status = 'active' WHERE slug = 'acme'")
        await until(lambda: _served(database, "acme"), timeout=1.0)
        await database.dispose()

    asyncio.run(scenario())
    # The sync path reads the registry too (scripts, the CLI).
    with tenant_context("acme"), database.sync_session() as session:
        assert session.execute(text("SELECT 1")).scalar_one() == 1
    database.dispose_sync()


def test_answers_past_their_ttl_are_read_again_together(counted: Counted) -> None:
    """Many tenants' answers ageing out re-read the registry in one query, not one each,
    and an unchanged answer stays the same object (routes built on it stay valid)."""

    async def scenario() -> None:
        lookup = counted.lookup(ttl=0.3)
        await lookup.tenant("acme")
        await until(lambda: lookup.listening)
        slugs = ["acme", *(f"nobody_{i}" for i in range(30))]
        first = {slug: await lookup.tenant(slug) for slug in slugs}
        before = counted.queries
        await asyncio.sleep(0.32)  # every answer past its TTL, none past twice
        assert await lookup.tenant("acme") is first["acme"]  # served, refresh started
        await until(lambda: counted.queries == before + 1)
        await asyncio.sleep(0.05)
        for slug in slugs:
            assert await lookup.tenant(slug) is first[slug]
        assert counted.queries == before + 1  # all 31 re-read by that one query
        await lookup.aclose()

    asyncio.run(scenario())
