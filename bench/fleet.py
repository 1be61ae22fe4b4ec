"""Benchmark: read sessions on a replica against units of work on the primary,
read-your-writes under write-read pairs, and tenant-routed sessions over two servers
against a bare AsyncSession.

Starts two primaries, pg1 and pg2, and a streaming replica of pg1 (``db_tools.fleet_testing``:
the embedded wheel's programs, stopped and deleted on exit, also when killed), one table
with a row.

- ``primary-read``: ``SQLAlchemyDatabase.session()`` (the primary), the same primary-key
  select, one unit of work at a time;
- ``replica-read``: ``read_session()`` on a database configured with the replica, replay
  current, so every read session is routed to the replica (checked).

The two alternate in rounds; the ratio is of medians (wall time per unit of work). Then
``--pairs`` write-read pairs, each in its own request context (a write through
``session()``, then a ``read_session()`` that must see it), half of them with the replica's
replay paused: a read that misses its own write is a violation.

Then the fleet: ``--tenants`` (100) schema-per-tenant tenants, half placed on pg1 (the home
server, holding the registry ``core.tenants``) and half on pg2, each schema holding a user
with id 1 whose email names its tenant. One tenant per server is provisioned with
``SchemaTenantMigrator.create``; the others are copies of its schema (pg_dump, renamed, as
bench/tenancy_sessions.py does), registered on the home server with their ``server``.

- ``routed-fleet``: ``SQLAlchemyDatabase(multi_tenant=True, <PREFIX>SERVERS pg1 + pg2)``;
  each unit of work takes the next tenant in rotation, ``tenant_context`` +
  ``session()``, ``select(AuthUser).where(AuthUser.id == 1)`` (checked first: every tenant
  reads its own row on its own server);
- ``bare``: an ``AsyncSession`` on one plain ``create_async_engine`` (the same pool and
  connect arguments as db_kit's schema-per-tenant engines, ``db_kit.engine.engine_kwargs``
  with ``prepare=False``, nothing else of db_kit; the baseline bench/tenancy_sessions.py
  uses too), the same select on the same table mapped straight into one tenant's schema;
- ``bare-prepared``: the same with psycopg's server-side prepared statements on
  (information only: the cost of preparing nothing, which schema-per-tenant pays because
  every tenant's SQL is a different text).

The three alternate in rounds (order rotating); the ratio is of the medians of every unit
of work's wall time, and the CPU time this thread spent is printed beside it.

    uv run python bench/fleet.py [--ops 300] [--rounds 15] [--pairs 1000] [--tenants 100]
        [--fleet-rounds 25]

Prints exactly ``ratio replica-read / primary-read = X`` (target at most 1.05),
``read-your-writes violations: N of M`` (N must be 0) and
``ratio routed-fleet / bare = X`` (target at most 1.05). Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any


def stop_on_sigterm() -> None:
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


async def measure(args: argparse.Namespace, primary_url: Any, replica: Any, pg1: Any) -> None:
    from sqlalchemy import text

    import core_db
    from core_db.settings import CoreSettings
    from db_kit.database import SQLAlchemyDatabase
    from db_kit.replicas import SAMPLE_INTERVAL
    from db_shared.positions import position_context

    main = primary_url.render_as_string(hide_password=False)
    servers = {
        "pg1": {
            "replicas": [replica.url(primary_url.database).render_as_string(hide_password=False)],
            "max_lag_ms": 1000,
        }
    }
    plain = SQLAlchemyDatabase(
        core_db.CONFIG, settings=CoreSettings(url=main, environment="production")
    )
    fleet = SQLAlchemyDatabase(
        core_db.CONFIG,
        settings=CoreSettings(url=main, servers=json.dumps(servers), environment="production"),
    )
    read = text("SELECT id, body FROM bench_items WHERE id = 1")
    port = text("SELECT inet_server_port()")

    async def primary_read() -> None:
        async with plain.session() as s:
            (await s.execute(read)).one()

    async def replica_read() -> None:
        async with fleet.read_session() as s:
            (await s.execute(read)).one()

    try:
        # Warm both pools and check where each variant runs.
        await asyncio.sleep(SAMPLE_INTERVAL * 1.5)
        async with fleet.read_session() as s:
            assert (await s.scalar(port)) == replica.port, "the read session is not on the replica"
        async with plain.session() as s:
            assert (await s.scalar(port)) == pg1.port
        for _ in range(args.ops):
            await primary_read()
            await replica_read()

        timings: dict[str, list[float]] = {"primary-read": [], "replica-read": []}
        variants = [("primary-read", primary_read), ("replica-read", replica_read)]
        for round_ in range(args.rounds):
            for name, op in variants if round_ % 2 == 0 else variants[::-1]:
                began = time.perf_counter()
                for _ in range(args.ops):
                    await op()
                timings[name].append((time.perf_counter() - began) / args.ops)
        medians = {name: statistics.median(values) * 1e6 for name, values in timings.items()}
        for name, value in medians.items():
            print(f"{name:13s} {value:8.1f} us per unit of work (median of {args.rounds} rounds)")
        async with fleet.read_session() as s:
            assert (await s.scalar(port)) == replica.port, "reads left the replica mid-run"

        # read-your-writes: half the pairs with replay current, half with it paused.
        violations = 0
        served: dict[str, int] = {"primary": 0, "replica": 0}
        half = args.pairs // 2
        for i in range(args.pairs):
            if i == half:
                replica.pause_replay()
            with position_context():
                async with fleet.session() as s:
                    await s.execute(
                        text("INSERT INTO bench_items (body) VALUES (:b)"), {"b": f"pair-{i}"}
                    )
                async with fleet.read_session() as s:
                    where, seen = (
                        await s.execute(
                            text(
                                "SELECT inet_server_port(), "
                                "EXISTS (SELECT 1 FROM bench_items WHERE body = :b)"
                            ),
                            {"b": f"pair-{i}"},
                        )
                    ).one()
            violations += not seen
            served["replica" if where == replica.port else "primary"] += 1
        replica.resume_replay()
        print(f"write-read pairs: reads served by {served} (half with replay paused)")
        ratio = medians["replica-read"] / medians["primary-read"]
        print(f"ratio replica-read / primary-read = {ratio:.3f}")
        print(f"read-your-writes violations: {violations} of {args.pairs}")
    finally:
        await plain.dispose()
        await fleet.dispose()


# the fleet: tenants on two servers ----------------------------------------------------------


def slug_of(i: int) -> str:
    return f"t{i:05d}"


def _psycopg(url: Any) -> dict[str, Any]:
    return {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
    }


def _dump_schema(url: Any, schema: str) -> str:
    """The schema's DDL and rows as SQL (the wheel's pg_dump), psql meta-commands removed."""
    from psycopg.conninfo import make_conninfo

    from db_tools.embedded import bin_dir

    result = subprocess.run(
        [
            str(bin_dir() / "pg_dump"),
            *("--dbname", make_conninfo(**_psycopg(url)), "--schema", schema),
            *("--inserts", "--no-owner", "--no-privileges"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return "\n".join(line for line in result.stdout.splitlines() if not line.startswith("\\"))


def provision_fleet(urls: dict[str, Any], tenants: int) -> dict[str, str]:
    """``tenants`` tenants, alternately on pg1 and pg2; returns slug -> server."""
    import psycopg

    import core_db
    from core_db.config import REGISTRY
    from db_kit.migrations.migrator import Migrator
    from db_kit.migrations.schema_tenants import SchemaTenantMigrator

    home = urls["pg1"]
    placement = {slug_of(i): ("pg1", "pg2")[i % 2] for i in range(tenants)}
    revision = None
    for server, url in urls.items():
        Migrator(REGISTRY, url).upgrade()
        Migrator(core_db.CONFIG, url).upgrade()
        mine = [slug for slug, where in placement.items() if where == server]
        template, copies = mine[0], mine[1:]
        migrator = SchemaTenantMigrator(core_db.CONFIG, url)
        migrator.create(template)
        revision = migrator.head()
        source = migrator.tenancy.schema_for(template)
        with psycopg.connect(**_psycopg(url)) as conn:
            conn.execute(f"INSERT INTO {source}.auth_users (id, email) VALUES (1, 'owner@x')")
            conn.commit()
        script = _dump_schema(url, source)
        if script.count(source) < 10:
            raise RuntimeError(f"pg_dump of {source} looks empty:\n{script[:2000]}")
        with psycopg.connect(**_psycopg(url)) as conn:
            for i in range(0, len(copies), 25):
                chunk = copies[i : i + 25]
                conn.execute(
                    "\n".join(script.replace(source, migrator.tenancy.schema_for(s)) for s in chunk)
                )
                conn.commit()
            for slug in mine:
                conn.execute(
                    f"UPDATE {migrator.tenancy.schema_for(slug)}.auth_users "
                    "SET email = %s WHERE id = 1",
                    (f"owner@{slug}.{server}",),
                )
            if url != home:
                conn.execute("DELETE FROM core.tenants")  # the registry is the home server's
            conn.commit()
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE pg_catalog.pg_class, pg_catalog.pg_attribute")
    with psycopg.connect(**_psycopg(home)) as conn:
        conn.execute(
            "INSERT INTO core.tenants "
            "(slug, name, schema_name, status, server, revision, migrated_at) "
            "SELECT s, s, 'tenant_' || s, 'active', w, %s, now() "
            "FROM unnest(%s::text[], %s::text[]) AS t(s, w) "
            "ON CONFLICT (slug) DO UPDATE SET server = excluded.server",
            (revision, list(placement), list(placement.values())),
        )
        conn.commit()
    return placement


async def measure_routed(
    args: argparse.Namespace, urls: dict[str, Any], ports: dict[str, int]
) -> float:
    from sqlalchemy import MetaData, func, select
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
    from sqlalchemy.orm import DeclarativeBase

    import core_db
    from core_db.models import AuthUser
    from core_db.settings import CoreSettings
    from db_kit.database import SQLAlchemyDatabase
    from db_kit.engine import engine_kwargs
    from db_shared.tenancy import tenant_context

    began = time.perf_counter()
    placement = await asyncio.to_thread(provision_fleet, urls, args.tenants)
    slugs = list(placement)
    print(
        f"{len(slugs)} tenants placed ({sum(w == 'pg1' for w in placement.values())} on pg1, "
        f"{sum(w == 'pg2' for w in placement.values())} on pg2) "
        f"in {time.perf_counter() - began:.1f} s"
    )

    def render(url: Any) -> str:
        return str(url.render_as_string(hide_password=False))

    servers = {name: {"primary": render(url)} for name, url in urls.items()}
    settings = CoreSettings(
        url=render(urls["pg1"]),
        servers=json.dumps(servers),
        environment="production",
        multi_tenant=True,
    )
    routed_db = SQLAlchemyDatabase(core_db.CONFIG, settings=settings)
    assert routed_db.fleet is not None, "not routed over the fleet"
    stmt = select(AuthUser).where(AuthUser.id == 1)

    # bare: the same table, mapped straight into one tenant's schema; a plain engine.
    one = slugs[0]

    class Base(DeclarativeBase):
        pass

    class BareUser(Base):
        __table__ = AuthUser.__table__.to_metadata(MetaData(), schema=f"tenant_{one}")

    bare_stmt = select(BareUser).where(BareUser.id == 1)
    plain = CoreSettings(url=render(urls["pg1"]), environment="production")
    bare_engine = create_async_engine(render(urls["pg1"]), **engine_kwargs(plain))
    bare_np_engine = create_async_engine(render(urls["pg1"]), **engine_kwargs(plain, prepare=False))

    def bare_op(sessions: async_sessionmaker[AsyncSession]) -> Callable[[int], Awaitable[str]]:
        async def op(nth: int) -> str:
            async with sessions() as s:
                user = (await s.execute(bare_stmt)).scalar_one()
                email = user.email
                await s.commit()
            return email

        return op

    async def routed(nth: int) -> str:
        with tenant_context(slugs[nth % len(slugs)]):
            async with routed_db.session() as s:
                user = (await s.execute(stmt)).scalar_one()
                return user.email

    variants: dict[str, Callable[[int], Awaitable[str]]] = {
        # The baseline runs with the connect arguments of db_kit's schema-per-tenant
        # engines (no server-side prepares), as bench/tenancy_sessions.py's bare does.
        "bare": bare_op(async_sessionmaker(bare_np_engine, expire_on_commit=False)),
        "bare-prepared": bare_op(async_sessionmaker(bare_engine, expire_on_commit=False)),
        "routed-fleet": routed,
    }
    try:
        # Correctness first: each tenant reads its own row, on its own server.
        where = select(func.inet_server_port(), AuthUser.email).where(AuthUser.id == 1)
        for slug, server in placement.items():
            with tenant_context(slug):
                async with routed_db.session() as s:
                    found = tuple((await s.execute(where)).one())
            assert found == (ports[server], f"owner@{slug}.{server}"), (slug, found)
        seen = {await routed(i) for i in range(len(slugs))}
        assert seen == {f"owner@{s}.{w}" for s, w in placement.items()}, len(seen)
        for name in ("bare", "bare-prepared"):
            assert await variants[name](0) == f"owner@{one}.{placement[one]}", name
        # Warm-up: pools, compiled caches, every tenant's tables on the pooled backends.
        for op in variants.values():
            for i in range(max(args.ops, 2 * len(slugs))):
                await op(i)

        # Short rounds, the order rotating every round; each unit of work timed on its own
        # (wall, and this thread's CPU): the median ignores the units a burst of load
        # elsewhere on the machine slowed, which a round's mean does not.
        wall: dict[str, list[int]] = {name: [] for name in variants}
        cpu: dict[str, list[int]] = {name: [] for name in variants}
        rounds: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        n = 0
        for round_ in range(args.fleet_rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                op, walls, cpus = variants[name], wall[name], cpu[name]
                for _ in range(args.ops):
                    w, c = time.perf_counter_ns(), time.thread_time_ns()
                    await op(n)
                    cpus.append(time.thread_time_ns() - c)
                    walls.append(time.perf_counter_ns() - w)
                    n += 1
                rounds[name].append(statistics.median(walls[-args.ops :]))
        medians = {name: statistics.median(values) / 1e3 for name, values in wall.items()}
        for name, value in medians.items():
            print(
                f"{name:13s} {value:8.1f} us per unit of work, "
                f"{statistics.median(cpu[name]) / 1e3:6.1f} us CPU "
                f"(median of {args.fleet_rounds} x {args.ops})"
            )
        per_round = [r / b for r, b in zip(rounds["routed-fleet"], rounds["bare"], strict=True)]
        cpu_ratio = statistics.median(cpu["routed-fleet"]) / statistics.median(cpu["bare"])
        print(
            "routed-fleet / bare-prepared (psycopg preparing, for information) = "
            f"{medians['routed-fleet'] / medians['bare-prepared']:.3f}; "
            f"routed-fleet / bare: CPU {cpu_ratio:.3f}, "
            f"per round {min(per_round):.2f} .. {max(per_round):.2f}"
        )
        return medians["routed-fleet"] / medians["bare"]
    finally:
        await routed_db.dispose()
        await bare_engine.dispose()
        await bare_np_engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=300, help="units of work per round")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--pairs", type=int, default=1000, help="write-read pairs")
    parser.add_argument("--tenants", type=int, default=100, help="tenants over pg1 and pg2")
    parser.add_argument(
        "--fleet-rounds", type=int, default=25, help="rounds of routed-fleet / bare / bare-prepared"
    )
    args = parser.parse_args()
    stop_on_sigterm()

    import core_db
    from db_tools.fleet_testing import running_fleet

    began = time.perf_counter()
    with running_fleet(["pg1", "pg2"]) as fleet:
        pg1 = fleet["pg1"]
        primary_url = pg1.create_database("bench")
        pg1.scalar(
            "CREATE TABLE bench_items (id serial PRIMARY KEY, body text NOT NULL); "
            "INSERT INTO bench_items (body) VALUES ('one')",
            database=primary_url.database,
        )
        replica = fleet.add_replica(pg1)
        print(f"primary and replica ready in {time.perf_counter() - began:.1f} s")
        asyncio.run(measure(args, primary_url, replica, pg1))
        urls = {name: fleet[name].create_database("fleet_bench") for name in ("pg1", "pg2")}
        # The migrators read core_db's settings: the home server's primary.
        os.environ["ENVIRONMENT"] = "production"
        os.environ["DATABASE_URL"] = urls["pg1"].render_as_string(hide_password=False)
        core_db.CONFIG.reset()
        ratio = asyncio.run(measure_routed(args, urls, {name: fleet[name].port for name in urls}))
        print(f"ratio routed-fleet / bare = {ratio:.2f}")
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
