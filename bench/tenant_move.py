"""Benchmark: moving a 100k-row tenant between two servers while two writers write to it
through the app's own engine, once with logical replication and once with the dump method.

Starts two servers (``db_tools.fleet_testing``: the embedded wheel's programs,
``wal_level=logical``, stopped and deleted on exit, also when killed). The tenant is a
core_db schema-per-tenant tenant on pg1 with ``--rows`` users; each writer inserts a user
and updates its own row in one unit of work (``SQLAlchemyDatabase.session()``, the fleet's
routing), retrying whatever was refused (503 while frozen, moved). After each move every
acknowledged insert must be on the target and every writer's row must hold its last
acknowledged update.

    uv run python bench/tenant_move.py [--rows 100000]

Prints exactly ``lost writes: N`` and ``lost updates: N`` (both must be 0), ``freeze ms: N``
(the logical move's writes paused, target at most 250), ``dump freeze ms: N`` and
``longest write gap ms: N`` (the longest time between two acknowledged writes during the
logical move). Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any


def stop_on_sigterm() -> None:
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


@dataclass
class Writers:
    db: Any
    slug: str
    stop: threading.Event = field(default_factory=threading.Event)
    inserted: list[str] = field(default_factory=list)
    last_update: dict[int, str] = field(default_factory=dict)
    acknowledged_at: list[float] = field(default_factory=list)
    refused: int = 0

    async def run(self, writers: int = 2) -> None:
        from sqlalchemy import insert

        from auth.tables import AuthUserTable
        from db_shared.tenancy import tenant_context

        user = self.db.model(AuthUserTable)
        with tenant_context(self.slug):
            rows = []
            for w in range(writers):
                async with self.db.session() as s:
                    statement = insert(user).values(email=f"writer{w}-{self.slug}@x.org")
                    rows.append((await s.execute(statement.returning(user.id))).scalar_one())
            await asyncio.gather(*(self._write(w, row) for w, row in enumerate(rows)))

    async def _write(self, w: int, row_id: int) -> None:
        from sqlalchemy import insert, update

        from auth.tables import AuthUserTable
        from db_shared import DatabaseUnavailableError, RetryableError

        user = self.db.model(AuthUserTable)
        for n in itertools.count(1):
            if self.stop.is_set():
                return
            email, name = f"w{w}-{n}@x.org", f"w{w}-{n}"
            try:
                async with self.db.session() as s:
                    await s.execute(insert(user).values(email=email))
                    await s.execute(update(user).where(user.id == row_id).values(username=name))
            except (RetryableError, DatabaseUnavailableError):
                self.refused += 1
                await asyncio.sleep(0.005)
                continue
            self.inserted.append(email)
            self.last_update[row_id] = name
            self.acknowledged_at.append(time.monotonic())

    def gap_ms(self, since: float, until: float) -> float:
        times = [since, *(t for t in self.acknowledged_at if since <= t <= until), until]
        return max(b - a for a, b in itertools.pairwise(times)) * 1000


def lost(url: Any, schema: str, writers: Writers) -> tuple[int, int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            emails = set(conn.execute(text(f"SELECT email FROM {schema}.auth_users")).scalars())
            names = dict(
                conn.execute(
                    text(f"SELECT id, username FROM {schema}.auth_users WHERE username IS NOT NULL")
                ).all()
            )
    finally:
        engine.dispose()
    writes = sum(1 for e in writers.inserted if e not in emails)
    updates = sum(1 for i, n in writers.last_update.items() if names.get(i) != n)
    return writes, updates


def one_move(urls: dict[str, Any], rows: int, method: str) -> tuple[Any, Writers, float, float]:
    """Make a tenant of ``rows`` users on pg1 and move it to pg2 under two writers."""
    import uuid

    from sqlalchemy import create_engine, text

    import core_db
    from core_db.settings import CoreSettings
    from db_kit.database import SQLAlchemyDatabase
    from db_kit.migrations.schema_tenants import SchemaTenantMigrator
    from db_kit.tenancy.moves import TenantMover

    slug = f"bench_{method}_{uuid.uuid4().hex[:6]}"
    SchemaTenantMigrator(core_db.CONFIG, urls["pg1"]).create(slug)
    engine = create_engine(urls["pg1"])
    with engine.begin() as conn:
        conn.execute(text("UPDATE core.tenants SET server = 'pg1' WHERE slug = :s"), {"s": slug})
        conn.execute(
            text(
                f"INSERT INTO tenant_{slug}.auth_users (email) "
                "SELECT 'seed' || g || '@x.org' FROM generate_series(1, :n) g"
            ),
            {"n": rows},
        )
    engine.dispose()
    servers = {n: {"primary": u.render_as_string(hide_password=False)} for n, u in urls.items()}
    settings = CoreSettings(
        url=urls["pg1"].render_as_string(hide_password=False),
        servers=json.dumps(servers),
        multi_tenant=True,
        environment="production",
    )
    db = SQLAlchemyDatabase(core_db.CONFIG, settings=settings)
    writers = Writers(db, slug)
    mover = TenantMover(core_db.CONFIG, settings=settings, actor="bench")
    report: list[Any] = []
    window: list[float] = []

    async def scenario() -> None:
        task = asyncio.create_task(writers.run())
        await asyncio.sleep(1.0)
        window.append(time.monotonic())
        report.append(await asyncio.to_thread(mover.move, slug, to="pg2", method=method))
        window.append(time.monotonic())
        await asyncio.sleep(1.0)
        writers.stop.set()
        await task
        await db.dispose()

    asyncio.run(scenario())
    return report[0], writers, window[0], window[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="users in the moved tenant")
    args = parser.parse_args()
    stop_on_sigterm()

    import core_db
    from core_db.config import REGISTRY
    from db_kit.migrations.migrator import Migrator
    from db_tools.fleet_testing import running_fleet

    began = time.perf_counter()
    with running_fleet(["pg1", "pg2"]) as fleet:
        urls = {name: fleet[name].create_database("move_bench") for name in ("pg1", "pg2")}
        os.environ["ENVIRONMENT"] = "production"
        os.environ["DATABASE_URL"] = urls["pg1"].render_as_string(hide_password=False)
        core_db.CONFIG.reset()
        for url in urls.values():
            Migrator(REGISTRY, url).upgrade()
            Migrator(core_db.CONFIG, url).upgrade()
        print(f"servers ready in {time.perf_counter() - began:.1f} s; {args.rows} rows per tenant")

        logical, writers, start, end = one_move(urls, args.rows, "logical")
        lost_writes, lost_updates = lost(urls["pg2"], f"tenant_{logical.slug}", writers)
        gap = writers.gap_ms(start, end + 1.0)
        print(
            f"logical: {logical.seconds:.1f} s, {len(writers.inserted)} writes acknowledged, "
            f"{writers.refused} refused and retried"
        )
        dump, dump_writers, _, _ = one_move(urls, args.rows, "dump")
        dump_lost = lost(urls["pg2"], f"tenant_{dump.slug}", dump_writers)
        print(
            f"dump: {dump.seconds:.1f} s, {len(dump_writers.inserted)} writes acknowledged, "
            f"{dump_writers.refused} refused and retried"
        )
        print(f"lost writes: {lost_writes + dump_lost[0]}")
        print(f"lost updates: {lost_updates + dump_lost[1]}")
        print(f"freeze ms: {logical.freeze_ms}")
        print(f"dump freeze ms: {dump.freeze_ms}")
        print(f"longest write gap ms: {gap:.0f}")
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
