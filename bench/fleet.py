"""Benchmark: read sessions on a replica against units of work on the primary, and
read-your-writes under write-read pairs.

Starts a primary and a streaming replica of it (``db_tools.fleet_testing``: the embedded
wheel's programs, stopped and deleted on exit, also when killed), one table with a row.

- ``primary-read``: ``SQLAlchemyDatabase.session()`` (the primary), the same primary-key
  select, one unit of work at a time;
- ``replica-read``: ``read_session()`` on a database configured with the replica, replay
  current, so every read session is routed to the replica (checked).

The two alternate in rounds; the ratio is of medians (wall time per unit of work). Then
``--pairs`` write-read pairs, each in its own request context (a write through
``session()``, then a ``read_session()`` that must see it), half of them with the replica's
replay paused: a read that misses its own write is a violation.

    uv run python bench/fleet.py [--ops 300] [--rounds 15] [--pairs 1000]

Prints exactly ``ratio replica-read / primary-read = X`` (target at most 1.05) and
``read-your-writes violations: N of M`` (N must be 0). Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import time
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=300, help="units of work per round")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--pairs", type=int, default=1000, help="write-read pairs")
    args = parser.parse_args()
    stop_on_sigterm()

    from db_tools.fleet_testing import running_fleet

    began = time.perf_counter()
    with running_fleet(["pg1"]) as fleet:
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


if __name__ == "__main__":
    main()
