"""Benchmark: tenant-routed sessions against a bare AsyncSession, and 2,000 tenants against 1.

Every unit of work is the same primary-key read, ``select(AuthUser).where(AuthUser.id == 1)``
then its attributes, on one engine (pool, pre-ping, connect arguments), one at a time:

- ``bare``: a plain ``async_sessionmaker`` session on the engine, reading ``public``;
- ``transl``: the same on ``engine.execution_options(schema_translate_map=...)`` for one
  tenant (SQLAlchemy's share of routing, without db_kit);
- ``xN``: ``SQLAlchemyDatabase(multi_tenant=True).session()`` inside ``tenant_context``,
  cycling over N tenant schemas (one compiled statement for all);
- ``... np``: the same with psycopg's server-side prepared statements off
  (``prepare_threshold=None``, as behind PgBouncer).

    uv run python bench/tenancy_sessions.py [--tenants 2000] [--ops 200] [--rounds 25]

Targets: x100 / bare <= 1.05; x2000 / x1 <= 1.05. Prints ``ratio routed-100 = X`` and
``ratio tenants-2000 = X`` (the first and the (b) line of the table). Not a test: it prints numbers. One
tenant is provisioned with ``SchemaTenantMigrator.create``; the others are copies of its schema
(pg_dump of that schema, renamed), registered in ``core.tenants``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL


def slug_of(i: int) -> str:
    return f"t{i:05d}"


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so every ``finally`` (the PostgreSQL server) runs."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


# provisioning ------------------------------------------------------------------------------


def psycopg_kwargs(url: URL) -> dict[str, Any]:
    return {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
    }


def dump_schema(url: URL, schema: str) -> str:
    """The schema's DDL and rows as SQL (the wheel's pg_dump), psql meta-commands removed."""
    from psycopg.conninfo import make_conninfo

    from db_tools.embedded import bin_dir

    result = subprocess.run(
        [
            str(bin_dir() / "pg_dump"),
            *("--dbname", make_conninfo(**psycopg_kwargs(url)), "--schema", schema),
            *("--inserts", "--no-owner", "--no-privileges"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    # pg_dump 17.6+/18 wraps its output in \restrict ... \unrestrict (psql-only commands).
    return "\n".join(line for line in result.stdout.splitlines() if not line.startswith("\\"))


def clone_tenants(
    url: URL, template: str, slugs: list[str], *, batch: int = 50, connections: int = 2
) -> None:
    """Copy the template tenant's schema (tables, indexes, alembic_version, rows) per slug.

    Each copy is registered in ``core.tenants`` as an active tenant at the template's
    revision, as ``SchemaTenantMigrator.create`` would leave it, at a fraction of its cost.
    """
    from concurrent.futures import ThreadPoolExecutor

    import psycopg

    import core_db
    from db_kit.migrations.schema_tenants import SchemaTenantMigrator

    tenancy = SchemaTenantMigrator(core_db.CONFIG, url).tenancy
    source = tenancy.schema_for(template)
    script = dump_schema(url, source)
    if script.count(source) < 10:
        raise RuntimeError(f"pg_dump of {source} looks empty:\n{script[:2000]}")
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        found = conn.execute(f'SELECT version_num FROM "{source}".alembic_version').fetchone()
    revision = found[0] if found else None
    chunks = [slugs[i : i + batch] for i in range(0, len(slugs), batch)]

    def copy(share: list[list[str]]) -> None:
        with psycopg.connect(**psycopg_kwargs(url)) as conn:
            for chunk in share:
                conn.execute(
                    "\n".join(script.replace(source, tenancy.schema_for(s)) for s in chunk)
                )
                conn.execute(
                    "INSERT INTO core.tenants "
                    "(slug, name, schema_name, status, revision, migrated_at) "
                    "SELECT s, s, %s || s, 'active', %s, now() FROM unnest(%s::text[]) AS s",
                    (tenancy.schema_prefix, revision, chunk),
                )
                conn.commit()

    # The server does the work: one connection per CPU it may use.
    with ThreadPoolExecutor(connections) as pool:
        for done in pool.map(copy, [chunks[i::connections] for i in range(connections)]):
            assert done is None
    # The copies churned the catalogs: vacuum them now rather than autovacuum mid-measurement.
    with psycopg.connect(**psycopg_kwargs(url), autocommit=True) as conn:
        catalogs = conn.execute(
            "SELECT oid::regclass::text FROM pg_class "
            "WHERE relnamespace = 'pg_catalog'::regnamespace AND relkind = 'r'"
        ).fetchall()
        conn.execute(f"VACUUM ANALYZE {', '.join(name for (name,) in catalogs)}")


def pin_server(data_dir: Path) -> int | None:
    """Move the embedded server's postmaster (and the backends it forks from now on) to the
    last CPU and this process to the others; returns that CPU, or None when not pinned."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pidfile = data_dir / "pgdata" / "postmaster.pid"
    if len(cpus) < 2 or not pidfile.exists():
        return None
    os.sched_setaffinity(int(pidfile.read_text().split()[0]), {cpus[-1]})
    os.sched_setaffinity(0, set(cpus[:-1]))
    return cpus[-1]


def provision(url: URL, count: int) -> dict[str, float]:
    """The registry, ``public`` and ``count`` tenants, each holding one user with id 1."""
    import psycopg

    import core_db
    from core_db.config import REGISTRY
    from db_kit.migrations.migrator import Migrator
    from db_kit.migrations.schema_tenants import SchemaTenantMigrator

    timings: dict[str, float] = {}
    began = time.perf_counter()
    Migrator(REGISTRY, url).upgrade()
    Migrator(core_db.CONFIG, url).upgrade()  # public: what the bare session reads
    timings["registry + public schema migrated"] = time.perf_counter() - began

    began = time.perf_counter()
    template = slug_of(0)
    SchemaTenantMigrator(core_db.CONFIG, url).create(template)
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        for schema in ("public", f"tenant_{template}"):
            conn.execute(
                f"INSERT INTO {schema}.auth_users (email) VALUES ('owner@{schema}.example')"
            )
    timings["1 tenant with SchemaTenantMigrator.create"] = time.perf_counter() - began

    began = time.perf_counter()
    clone_tenants(url, template, [slug_of(i) for i in range(1, count)])
    timings[f"{count - 1} tenant schemas cloned (pg_dump + rename)"] = time.perf_counter() - began
    return timings


# measuring ---------------------------------------------------------------------------------


def no_server_side_prepare(
    dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]
) -> None:
    cparams["prepare_threshold"] = None  # as behind PgBouncer in transaction mode


Op = Callable[[int], Coroutine[Any, Any, str]]


@dataclass
class Timings:
    """Per-unit-of-work wall and CPU times of one variant, by round (nanoseconds)."""

    wall: list[list[int]] = field(default_factory=list)
    cpu: list[list[int]] = field(default_factory=list)

    def median(self, what: str, rnd: int | None = None) -> float:
        rounds = getattr(self, what)
        values = rounds[rnd] if rnd is not None else [v for r in rounds for v in r]
        return float(statistics.median(values)) / 1e3


async def drive(op: Op, n: int, timings: Timings | None = None) -> list[str]:
    """Run ``op`` n times; record each one's wall and thread CPU time into ``timings``."""
    seen, wall, cpu = [], [], []
    for i in range(n):
        w, c = time.perf_counter_ns(), time.thread_time_ns()
        seen.append(await op(i))
        cpu.append(time.thread_time_ns() - c)
        wall.append(time.perf_counter_ns() - w)
    if timings is not None:
        timings.wall.append(wall)
        timings.cpu.append(cpu)
    return seen


async def measure(args: argparse.Namespace, url: URL) -> None:
    from sqlalchemy import event, select
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    import core_db
    from core_db.models import AuthUser
    from db_kit.database import SQLAlchemyDatabase
    from db_shared.tenancy import tenant_context

    stmt = select(AuthUser).where(AuthUser.id == 1)
    few, many = min(100, args.tenants), args.tenants
    variants: dict[str, Op] = {}
    databases: list[SQLAlchemyDatabase] = []

    for prepared in (True, False):
        db = SQLAlchemyDatabase(core_db.CONFIG, url=url, multi_tenant=True)
        if not prepared:
            for sync_engine in (db.engines.sync_engine, db.engines.async_engine.sync_engine):
                event.listen(sync_engine, "do_connect", no_server_side_prepare)
        databases.append(db)

        def plain(sessions: async_sessionmaker[AsyncSession]) -> Op:
            async def op(nth: int) -> str:
                async with sessions() as s:
                    user = (await s.execute(stmt)).scalar_one()
                    email = user.email
                    await s.commit()
                return email

            return op

        def routed(slugs: list[str], db: SQLAlchemyDatabase = db) -> Op:
            async def op(nth: int) -> str:
                with tenant_context(slugs[nth % len(slugs)]):
                    async with db.session() as s:
                        user = (await s.execute(stmt)).scalar_one()
                        return user.email

            return op

        engine = db.engines.async_engine
        suffix = "" if prepared else " np"
        variants[f"bare{suffix}"] = plain(async_sessionmaker(engine, expire_on_commit=False))
        # SQLAlchemy's own share of routing: the translated engine, without db_kit.
        translated = engine.execution_options(schema_translate_map={None: f"tenant_{slug_of(0)}"})
        variants[f"transl{suffix}"] = plain(async_sessionmaker(translated, expire_on_commit=False))
        for k in (1, few, many):
            variants[f"x{k}{suffix}"] = routed([slug_of(i) for i in range(k)])

    # Correctness first: each variant reads the schema it is meant to.
    for name, op in variants.items():
        seen = set(await drive(op, min(args.tenants, 200)))
        if name.startswith("bare"):
            assert seen == {"owner@public.example"}, seen
        elif name.startswith("transl"):
            assert seen == {f"owner@tenant_{slug_of(0)}.example"}, seen
        else:
            assert all(e.startswith("owner@tenant_t") for e in seen), seen
            assert len(seen) == min(int(name[1:].split()[0]), 200), name
    # Warm-up: every tenant's tables on each pooled backend; compiled and prepared caches.
    began = time.perf_counter()
    for name, op in variants.items():
        await drive(op, max(args.ops, many if name.startswith(f"x{many}") else 0))
    warmup = time.perf_counter() - began

    counted = databases[0].engines.async_engine.sync_engine
    cache = counted._compiled_cache
    size_before = len(cache) if cache is not None else -1
    outcomes: Counter[str] = Counter()

    def count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        outcomes[str(rest[-2].cache_hit).rpartition(".")[2]] += 1  # rest: params, context, many

    event.listen(counted, "after_cursor_execute", count)
    distinct = len(set(await drive(variants[f"x{many}"], many)))
    event.remove(counted, "after_cursor_execute", count)
    size_after = len(cache) if cache is not None else -1

    # Short blocks, the order rotating every round: a burst of load elsewhere on the machine
    # lands on every variant alike, and medians ignore the units of work it slowed.
    timings = {name: Timings() for name in variants}
    names = list(variants)
    began = time.perf_counter()
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            await drive(variants[name], args.ops, timings[name])
    measured = time.perf_counter() - began
    for db in databases:
        await db.dispose()

    print(
        f"{args.rounds} rounds x {args.ops} units of work per variant, one at a time "
        f"({measured:.0f} s); np: psycopg's server-side prepared statements off "
        "(prepare_threshold=None, as behind PgBouncer)"
    )
    print("median per unit of work: wall time, and this thread's CPU time (Python's share)")
    for name in names:
        t = timings[name]
        print(f"  {name:<10} {t.median('wall'):>8.1f} us {t.median('cpu'):>8.1f} cpu us")
    print("ratios of the medians (range of the per-round ratios), wall and cpu")
    named: dict[tuple[str, str], tuple[float, float]] = {}
    for label, a, b, target in [
        ("(a) routed over 100 tenants / bare", f"x{few}", "bare", 1.05),
        ("    same, no prepared statements", f"x{few} np", "bare np", 1.05),
        ("    routed, 1 tenant / bare", "x1", "bare", None),
        ("    same, no prepared statements", "x1 np", "bare np", None),
        ("    SQLAlchemy's share: translated / bare", "transl", "bare", None),
        ("    same, no prepared statements", "transl np", "bare np", None),
        ("    db_kit's share: routed / translated", "x1", "transl", None),
        ("    same, no prepared statements", "x1 np", "transl np", None),
        (f"(b) {many} tenants / 1 tenant", f"x{many}", "x1", 1.05),
        ("    same, no prepared statements", f"x{many} np", "x1 np", 1.05),
    ]:
        ta, tb = timings[a], timings[b]
        ratio = ta.median("wall") / tb.median("wall")
        named[(a, b)] = (ratio, ta.median("cpu") / tb.median("cpu"))
        rounds = [ta.median("wall", r) / tb.median("wall", r) for r in range(args.rounds)]
        cpu_ratio = ta.median("cpu") / tb.median("cpu")
        verdict = ""
        if target is not None:
            verdict = f"  {'meets' if ratio <= target else 'ABOVE'} the {target:.2f} target"
        print(
            f"{label:<42} {a:>9} / {b:<9} {ratio:.3f} ({min(rounds):.2f}-{max(rounds):.2f}) "
            f"cpu {cpu_ratio:.3f}{verdict}"
        )
    print(
        f"compiled cache (SQLAlchemy): {size_before} entries after warm-up, {size_after} after "
        f"one pass over {many} tenants ({distinct} distinct rows read); that pass's "
        f"statements by cache outcome: {dict(outcomes)}"
    )
    print(f"warm-up {warmup:.1f} s")
    routed, routed_cpu = named[(f"x{few}", "bare")]
    print(f"ratio routed-{few} = {routed:.3f} (cpu {routed_cpu:.3f})")
    tenants, tenants_cpu = named[(f"x{many}", "x1")]
    print(f"ratio tenants-{many} = {tenants:.3f} (cpu {tenants_cpu:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tenants", type=int, default=2000, help="tenant schemas for (b)")
    parser.add_argument("--ops", type=int, default=200, help="units of work per variant/round")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not split the CPUs (default with 2 or more: PostgreSQL on the last CPU, "
        "this process on the others)",
    )
    args = parser.parse_args()
    if args.tenants < 2:
        parser.error("--tenants must be at least 2")

    import core_db
    from db_tools.testing import start_server, url_string

    stop_on_sigterm()
    started = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix="bench_pg_"))
    try:
        # start_server stops its server when this block ends, or when this process dies.
        with start_server(data_dir) as postgres:
            url = postgres.create_database("bench_tenancy")
            os.environ["ENVIRONMENT"] = "production"  # no statement logging
            os.environ["DATABASE_URL"] = url_string(url)
            core_db.CONFIG.reset()
            print(f"PostgreSQL: {postgres.source}", flush=True)
            try:
                for step, seconds in provision(url, args.tenants).items():
                    print(f"setup  {step}: {seconds:.1f} s", flush=True)
                # Set-up used every CPU; measurements keep the client off the server's CPU.
                cpu = None if args.no_pin else pin_server(data_dir)
                print(
                    "not pinned"
                    if cpu is None
                    else f"PostgreSQL backends on CPU {cpu}, this process on the others",
                    flush=True,
                )
                asyncio.run(measure(args, url))
            finally:
                postgres.drop_all()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        print(f"total {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
