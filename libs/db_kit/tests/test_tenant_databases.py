"""Database-per-tenant machinery on a real PostgreSQL: resolvers, settings, the engine cache.

The tenant databases are fresh, empty databases of the test server; the cache's
connections carry a unique ``application_name`` so ``pg_stat_activity`` counts exactly
the connections the cache under test holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from db_kit.settings import DatabaseSettings, settings_config
from db_kit.tenancy import (
    CallableTenantUrlResolver,
    EngineCache,
    StaticTenantUrlResolver,
    TenantDatabaseSettings,
    TenantDatabaseUnavailableError,
    TenantUrlResolver,
    TenantUrls,
    tenant_url,
    tenant_urls_field,
)
from db_shared import ConfigurationError, InvalidTenantError, UnknownTenantError
from db_tools.testing import PostgresServer

SECRET = "hunter2"
MALICIOUS = ['x";DROP DATABASE postgres;--', "a b", "pg_catalog", "a" * 41, "Acme", "postgres", ""]


class AcmeSettings(TenantDatabaseSettings):
    """A database-per-tenant lib of the tests' own, so these tests need no db lib."""

    model_config = settings_config(env_prefix="ACME_DB_") | {"hide_input_in_errors": True}
    url_variable: ClassVar[str] = "ACME_DATABASE_URL"
    tenant_urls_variable: ClassVar[str] = "ACME_TENANT_URLS"
    tenant_urls: TenantUrls = tenant_urls_field("ACME_TENANT_URLS")


def settings(app: str, **overrides: object) -> DatabaseSettings:
    return DatabaseSettings(application_name=app, pool_timeout=30, **overrides)  # type: ignore[arg-type]


def app_name() -> str:
    return f"tenant-cache-{uuid.uuid4().hex[:12]}"


def count_connections(server: PostgresServer, app: str) -> int:
    with server._admin() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchone()
    assert row is not None
    return int(str(row[0]))


def wait_for_connections(server: PostgresServer, app: str, expected: int) -> int:
    # A backend leaves pg_stat_activity a moment after its client closed the socket.
    deadline = time.monotonic() + 5
    found = count_connections(server, app)
    while found != expected and time.monotonic() < deadline:
        time.sleep(0.02)
        found = count_connections(server, app)
    return found


class Sampler:
    """Counts the cache's server connections from a separate connection every few ms."""

    def __init__(self, server: PostgresServer, app: str) -> None:
        self.server, self.app = server, app
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.server._admin() as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    (self.app,),
                ).fetchone()
                assert row is not None
                self.samples.append(int(str(row[0])))
                time.sleep(0.002)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def tenant_dbs(fresh_database: Callable[..., URL]) -> Callable[[int], dict[str, URL]]:
    """Factory: ``n`` fresh databases ``t0..t{n-1}``, each with a ``notes`` table."""

    def make(n: int) -> dict[str, URL]:
        urls = {f"t{i}": fresh_database(f"tenant_t{i}") for i in range(n)}
        for url in urls.values():
            with psycopg.connect(url.set(drivername="postgresql").render_as_string(False)) as c:
                c.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
        return urls

    return make


# --- resolvers and settings -----------------------------------------------------------------


def test_static_resolver_normalises_drivers_and_hides_passwords() -> None:
    resolver = StaticTenantUrlResolver(
        {
            "us": f"postgresql://app:{SECRET}@us-db:5432/bibikos_us",
            "eu": URL.create("postgres", "app", SECRET, "eu-db", 5433, "bibikos_eu"),
        }
    )
    assert resolver.tenants == ("eu", "us")
    us = resolver.resolve_sync("us")
    assert us.drivername == "postgresql+psycopg"
    assert (us.host, us.database, us.password) == ("us-db", "bibikos_us", SECRET)
    assert asyncio.run(resolver.resolve("eu")).port == 5433
    assert SECRET not in repr(resolver)
    with pytest.raises(UnknownTenantError):
        resolver.resolve_sync("apac")


@pytest.mark.parametrize(
    ("urls", "expected"),
    [
        ({"us": f"mysql://app:{SECRET}@h/db"}, "driver 'mysql'"),
        ({"us": f"postgresql://app:{SECRET}@h"}, "names no database"),
        ({"us": f"::{SECRET}::"}, "not a valid database URL"),
        ({"us": 42}, "needs a database URL"),
        ({"Bad Slug": f"postgresql://app:{SECRET}@h/db"}, "Invalid tenant slug"),
    ],
)
def test_static_resolver_refuses_bad_maps_without_leaking(
    urls: dict[str, object], expected: str
) -> None:
    with pytest.raises((ConfigurationError, InvalidTenantError)) as info:
        StaticTenantUrlResolver(urls)  # type: ignore[arg-type]
    assert expected in str(info.value)
    assert SECRET not in str(info.value)


def test_callable_resolver_sync_async_and_unknown() -> None:
    calls: list[str] = []

    def registry(slug: str) -> str | None:
        calls.append(slug)
        return None if slug == "ghost" else f"postgres://app:pw@db/{slug}"

    async def async_registry(slug: str) -> URL | None:
        await asyncio.sleep(0)
        return URL.create("postgresql", host="db", database=slug) if slug != "ghost" else None

    for resolver in (
        CallableTenantUrlResolver(registry),
        CallableTenantUrlResolver(async_registry),
    ):
        assert isinstance(resolver, TenantUrlResolver)
        assert asyncio.run(resolver.resolve("acme")).database == "acme"
        # From sync code too: an async registry runs in a fresh loop when none is running.
        assert resolver.resolve_sync("acme").drivername == "postgresql+psycopg"
        with pytest.raises(UnknownTenantError):
            resolver.resolve_sync("ghost")
        with pytest.raises(UnknownTenantError):
            asyncio.run(resolver.resolve("ghost"))
        for slug in MALICIOUS:
            with pytest.raises(InvalidTenantError):
                resolver.resolve_sync(slug)
    assert "x" not in "".join(c for c in calls if c.startswith("x"))  # never saw bad slugs
    assert set(calls) == {"acme", "ghost"}

    with pytest.raises(ConfigurationError, match="returned int"):
        CallableTenantUrlResolver(lambda slug: 42).resolve_sync("acme")  # type: ignore[arg-type,return-value]

    async def inside_a_loop() -> None:
        with pytest.raises(ConfigurationError, match="async"):
            CallableTenantUrlResolver(async_registry).resolve_sync("acme")

    asyncio.run(inside_a_loop())


def test_tenant_url_refuses_placeholder_passwords_in_production() -> None:
    with pytest.raises(ConfigurationError, match="placeholder") as info:
        tenant_url("postgresql://app:changeme@h/db", tenant="us", source="X", production=True)
    assert "changeme" not in str(info.value)
    assert tenant_url("postgresql://app:changeme@h/db", tenant="us", source="X").database == "db"


@pytest.fixture
def acme_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.setenv("DB_WORKSPACE_ROOT", str(tmp_path))  # no .env file
    for name in list(os.environ):
        if name.startswith(("ACME_", "ENVIRONMENT")):
            monkeypatch.delenv(name)
    # Unset means production, where the main ACME_DATABASE_URL would be required.
    monkeypatch.setenv("ENVIRONMENT", "development")
    return monkeypatch


def test_settings_read_the_tenant_map_from_json(acme_env: pytest.MonkeyPatch) -> None:
    acme_env.setenv(
        "ACME_TENANT_URLS",
        f'{{"us": "postgresql://app:{SECRET}@us-db/acme_us", "eu": "postgres://app@eu-db/acme_eu"}}',
    )
    acme_env.setenv("ACME_DB_TENANT_MAX_ENGINES", "4")
    acme_env.setenv("ACME_DB_TENANT_CONNECTION_BUDGET", "12")
    loaded = AcmeSettings.load()
    assert loaded.tenant_max_engines == 4
    assert loaded.tenant_connection_budget == 12
    urls = loaded.tenant_url_map()
    assert urls["us"].drivername == "postgresql+psycopg"
    assert urls["us"].password == SECRET
    assert SECRET not in repr(loaded)
    cache = EngineCache.from_settings(loaded)
    assert (cache.max_engines, cache.connection_budget, cache.per_tenant_connections) == (4, 12, 3)
    assert isinstance(cache.resolver, StaticTenantUrlResolver)
    assert cache.resolver.tenants == ("eu", "us")


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ACME_TENANT_URLS", "{not json", "ACME_TENANT_URLS is not valid JSON"),
        ("ACME_TENANT_URLS", '["postgresql://h/db"]', "must map tenant slugs to URLs"),
        ("ACME_TENANT_URLS", f'{{"us": "mysql://app:{SECRET}@h/db"}}', "driver 'mysql'"),
        ("ACME_TENANT_URLS", f'{{"US": "postgresql://app:{SECRET}@h/db"}}', "Invalid tenant slug"),
        ("ACME_DB_TENANT_CONNECTION_BUDGET", "5", "ACME_DB_TENANT_CONNECTION_BUDGET=5"),
    ],
)
def test_settings_errors_name_the_variable_and_hide_the_password(
    acme_env: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    acme_env.setenv("ACME_DB_TENANT_MAX_ENGINES", "3")
    acme_env.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        AcmeSettings.load()
    assert expected in str(info.value)
    assert SECRET not in str(info.value)


def test_pool_sizes_fit_the_budget() -> None:
    resolver = StaticTenantUrlResolver({})
    small = EngineCache(resolver, settings("x"), max_engines=3, connection_budget=10)
    assert small.per_tenant_connections == 3  # 10 // 3: 2 async + 1 sync
    assert small.max_engines * small.per_tenant_connections <= small.connection_budget
    # Smaller pools asked for in settings are kept.
    modest = EngineCache(
        resolver, settings("x", pool_size=1, max_overflow=1), max_engines=2, connection_budget=100
    )
    assert modest.per_tenant_connections == 3
    with pytest.raises(ConfigurationError, match="raise it to 6"):
        EngineCache(resolver, settings("x"), max_engines=3, connection_budget=5)


# --- the engine cache -------------------------------------------------------------------------


async def note_count(cache: EngineCache, slug: str) -> int:
    async with cache.lease(slug) as engines, engines.async_engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM notes"))).scalar_one())


def test_refuses_malicious_slugs_before_resolving_or_sql(closed_port: int) -> None:
    seen: list[str] = []

    def registry(slug: str) -> str:
        seen.append(slug)
        return f"postgresql://app@127.0.0.1:{closed_port}/x"

    cache = EngineCache(
        CallableTenantUrlResolver(registry),
        settings(app_name()),
        max_engines=2,
        connection_budget=4,
    )
    for slug in MALICIOUS:
        with pytest.raises(InvalidTenantError):
            asyncio.run(note_count(cache, slug))
        with pytest.raises(InvalidTenantError), cache.lease_sync(slug):
            pass
        with pytest.raises(InvalidTenantError):
            cache.cleanup_sync(slug)
    assert seen == []
    assert cache.stats().created == 0


def test_concurrent_first_use_builds_one_engine(
    tenant_dbs: Callable[[int], dict[str, URL]],
) -> None:
    urls = tenant_dbs(1)
    resolved = 0

    async def slow_registry(slug: str) -> URL:
        nonlocal resolved
        resolved += 1
        await asyncio.sleep(0.05)  # every caller misses before anyone builds
        return urls[slug]

    cache = EngineCache(
        CallableTenantUrlResolver(slow_registry), settings(app_name()), max_engines=2,
        connection_budget=20,
    )  # fmt: skip

    def in_thread() -> int:
        with cache.lease_sync("t0") as engines, engines.sync_engine.connect() as conn:
            return int(conn.execute(text("SELECT 1")).scalar_one())

    async def scenario() -> list[int]:
        threads = [asyncio.to_thread(in_thread) for _ in range(8)]
        tasks = [note_count(cache, "t0") for _ in range(30)]
        return list(await asyncio.gather(*threads, *tasks))

    assert asyncio.run(scenario()) == [1] * 8 + [0] * 30
    stats = cache.stats()
    assert stats.created == 1
    assert stats.live == ("t0",)
    assert resolved >= 2  # the race was real: several callers resolved concurrently
    cache.cleanup_sync()


def test_lru_under_load_never_exceeds_the_connection_budget(
    tenant_dbs: Callable[[int], dict[str, URL]], postgres_server: PostgresServer
) -> None:
    urls = tenant_dbs(6)
    app = app_name()
    budget = 9
    cache = EngineCache(
        StaticTenantUrlResolver(urls), settings(app), max_engines=3, connection_budget=budget
    )
    tenants = list(urls)
    failures: list[BaseException] = []

    def sync_query(slug: str) -> object:
        with cache.lease_sync(slug) as engines, engines.sync_sessions() as session:
            session.execute(text("SELECT pg_sleep(0.002)"))
            return session.scalar(text("SELECT current_database()"))

    async def async_query(slug: str) -> object:
        async with cache.lease(slug) as engines, engines.async_sessions() as session:
            await session.execute(text("SELECT pg_sleep(0.002)"))
            return await session.scalar(text("SELECT current_database()"))

    async def worker(i: int) -> int:
        done = 0
        for round_ in range(2):  # cycle through the six tenants twice
            for step in range(len(tenants)):
                slug = tenants[(i + step + round_) % len(tenants)]
                try:
                    # Some sessions are sync (in threads), so both pools of a tenant fill.
                    if (i + step) % 5 == 0:
                        got = await asyncio.to_thread(sync_query, slug)
                    else:
                        got = await async_query(slug)
                    assert got == urls[slug].database
                    done += 1
                except BaseException as exc:
                    failures.append(exc)
                await asyncio.sleep(0)
        return done

    async def scenario() -> int:
        return sum(await asyncio.gather(*(worker(i) for i in range(50))))

    started = time.monotonic()
    with Sampler(postgres_server, app) as sampler:
        completed = asyncio.run(scenario())
    elapsed = time.monotonic() - started
    assert failures == []
    assert completed == 50 * 12
    assert len(sampler.samples) > 20, "the sampler must have watched the run"
    assert max(sampler.samples) <= budget, (max(sampler.samples), sampler.samples)
    assert max(sampler.samples) >= 4, "the load should have used several tenants' pools"
    stats = cache.stats()
    assert stats.evicted > 0, stats
    assert stats.created > 6, stats
    assert len(stats.live) <= 3
    assert elapsed < 60
    cache.cleanup_sync()
    assert wait_for_connections(postgres_server, app, 0) == 0


def test_eviction_waits_for_the_open_session_to_commit(
    tenant_dbs: Callable[[int], dict[str, URL]], postgres_server: PostgresServer
) -> None:
    urls = tenant_dbs(3)
    app = app_name()
    cache = EngineCache(
        StaticTenantUrlResolver(urls), settings(app), max_engines=2, connection_budget=4
    )

    async def scenario() -> None:
        inserted = asyncio.Event()
        release = asyncio.Event()

        async def long_session() -> None:
            async with cache.lease("t0") as engines, engines.async_sessions() as session:
                await session.execute(text("INSERT INTO notes VALUES (1, 'kept')"))
                inserted.set()
                await release.wait()
                await session.execute(text("INSERT INTO notes VALUES (2, 'kept too')"))
                await session.commit()

        holder = asyncio.create_task(long_session())
        await inserted.wait()
        assert await note_count(cache, "t1") == 0  # t0 busy, t1 idle: cache full
        # t2 needs a slot: t1 is idle, so t1 goes, not the busy t0.
        assert await note_count(cache, "t2") == 0
        assert cache.stats().live == ("t0", "t2")
        # t1 again: both live tenants... t0 still busy, t2 idle: t2 goes.
        assert await note_count(cache, "t1") == 0
        assert cache.stats().live == ("t0", "t1")
        # Evict t0 although its session is open: it drains, the session completes.
        await cache.cleanup("t0")
        assert cache.stats().draining == ("t0",)
        release.set()
        await holder
        assert cache.stats().draining == ()
        assert await note_count(cache, "t0") == 2  # committed, on fresh engines
        await cache.cleanup()

    asyncio.run(scenario())
    assert cache.stats().disposed == cache.stats().created
    assert wait_for_connections(postgres_server, app, 0) == 0


def test_busy_tenants_are_evicted_lru_and_the_newcomer_waits(
    tenant_dbs: Callable[[int], dict[str, URL]], postgres_server: PostgresServer
) -> None:
    urls = tenant_dbs(3)
    app = app_name()
    cache = EngineCache(
        StaticTenantUrlResolver(urls), settings(app), max_engines=2, connection_budget=4
    )

    async def scenario() -> None:
        opened = {slug: asyncio.Event() for slug in ("t0", "t1")}
        release = asyncio.Event()

        async def hold(slug: str, note: int) -> None:
            async with cache.lease(slug) as engines, engines.async_sessions() as session:
                await session.execute(text(f"INSERT INTO notes VALUES ({note}, 'held')"))
                opened[slug].set()
                await release.wait()
                await session.commit()

        holders = [asyncio.create_task(hold("t0", 1)), asyncio.create_task(hold("t1", 2))]
        await asyncio.gather(*(e.wait() for e in opened.values()))
        newcomer = asyncio.create_task(note_count(cache, "t2"))
        await asyncio.sleep(0.2)
        assert not newcomer.done(), "no slot is free: t2 must wait"
        assert cache.stats().draining == ("t0",), "the least recently used busy tenant drains"
        assert count_connections(postgres_server, app) <= 4
        release.set()
        await asyncio.gather(*holders)
        assert await newcomer == 0
        assert await note_count(cache, "t0") == 1  # the drained session committed
        assert await note_count(cache, "t1") == 1
        await cache.cleanup()

    asyncio.run(scenario())
    assert wait_for_connections(postgres_server, app, 0) == 0


def test_no_free_slot_in_time_is_unavailable_for_that_tenant_only(
    tenant_dbs: Callable[[int], dict[str, URL]],
) -> None:
    urls = tenant_dbs(2)
    cache = EngineCache(
        StaticTenantUrlResolver(urls), settings(app_name()), max_engines=1, connection_budget=2,
        wait_timeout=0.3,
    )  # fmt: skip

    async def scenario() -> None:
        async with cache.lease("t0") as engines, engines.async_engine.connect() as conn:
            with pytest.raises(TenantDatabaseUnavailableError) as info:
                await note_count(cache, "t1")
            assert info.value.tenant == "t1"
            assert "no engine slot became free within 0.3s" in str(info.value)
            await conn.execute(text("SELECT 1"))  # t0 unaffected
        assert await note_count(cache, "t1") == 0  # t0's drained slot went to t1
        await cache.cleanup()

    asyncio.run(scenario())
    assert cache.stats().live == ()


def test_cleanup_one_tenant_or_all(
    tenant_dbs: Callable[[int], dict[str, URL]], postgres_server: PostgresServer
) -> None:
    urls = tenant_dbs(3)
    app = app_name()
    cache = EngineCache(
        StaticTenantUrlResolver(urls), settings(app), max_engines=3, connection_budget=9
    )

    async def use_all() -> None:
        for slug in urls:
            await note_count(cache, slug)
            with cache.lease_sync(slug) as engines, engines.sync_engine.connect() as conn:
                conn.execute(text("SELECT 1"))

    asyncio.run(use_all())
    assert wait_for_connections(postgres_server, app, 6) == 6  # one async + one sync each
    asyncio.run(cache.cleanup("t1"))
    assert cache.stats().live == ("t0", "t2")
    assert wait_for_connections(postgres_server, app, 4) == 4
    cache.cleanup_sync("t0")  # sync variant closes the async pool too (no loop running)
    assert wait_for_connections(postgres_server, app, 2) == 2
    cache.cleanup_sync("t0")  # not cached: nothing to do
    cache.cleanup_sync()
    assert cache.stats().live == ()
    assert wait_for_connections(postgres_server, app, 0) == 0
    # The next use builds the tenant's engines again.
    assert asyncio.run(note_count(cache, "t0")) == 0
    asyncio.run(cache.cleanup())
    assert wait_for_connections(postgres_server, app, 0) == 0


def test_an_unreachable_tenant_leaves_the_others_working(
    tenant_dbs: Callable[[int], dict[str, URL]], closed_port: int
) -> None:
    urls = tenant_dbs(1)
    down = make_url(f"postgresql+psycopg://app:{SECRET}@127.0.0.1:{closed_port}/gone")
    cache = EngineCache(
        StaticTenantUrlResolver({**urls, "down": down}), settings(app_name()), max_engines=2,
        connection_budget=4,
    )  # fmt: skip

    async def scenario() -> None:
        for _ in range(3):
            with pytest.raises(OperationalError, match=str(closed_port)) as info:
                await note_count(cache, "down")
            assert SECRET not in str(info.value)
            assert await note_count(cache, "t0") == 0
        await cache.cleanup()

    asyncio.run(scenario())


def test_threads_and_a_sync_cache_keep_the_budget(
    tenant_dbs: Callable[[int], dict[str, URL]], postgres_server: PostgresServer
) -> None:
    urls = tenant_dbs(4)
    app = app_name()
    budget = 4
    cache = EngineCache(
        StaticTenantUrlResolver(urls), settings(app), max_engines=2, connection_budget=budget,
        sync_connections=1,
    )  # fmt: skip
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        for step in range(8):
            slug = f"t{(i + step) % 4}"
            try:
                with cache.lease_sync(slug) as engines, engines.sync_sessions() as s:
                    s.execute(text("SELECT pg_sleep(0.002)"))
            except BaseException as exc:
                errors.append(exc)

    with Sampler(postgres_server, app) as sampler:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert max(sampler.samples) <= budget
    cache.cleanup_sync()
    with contextlib.suppress(AssertionError):
        assert wait_for_connections(postgres_server, app, 0) == 0
    assert count_connections(postgres_server, app) == 0


def test_a_forked_child_builds_its_own_engines(
    tenant_dbs: Callable[[int], dict[str, URL]],
) -> None:
    urls = tenant_dbs(1)
    cache = EngineCache(
        StaticTenantUrlResolver(urls), settings(app_name()), max_engines=1, connection_budget=2
    )

    def backend_pid() -> int:
        with cache.lease_sync("t0") as engines, engines.sync_engine.connect() as conn:
            return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())

    parent_backend = backend_pid()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            os.close(read_end)
            live = cache.stats().live
            os.write(write_end, f"{len(live)} {backend_pid()}".encode())
            cache.cleanup_sync()
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        report = pipe.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    inherited, child_backend = (int(x) for x in report.split())
    assert inherited == 0, "the child starts with no engines"
    assert child_backend != parent_backend, "the child opened its own connection"
    assert backend_pid() == parent_backend, "the parent's pooled connection is untouched"
    cache.cleanup_sync()
