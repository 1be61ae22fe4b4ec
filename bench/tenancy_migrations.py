"""Benchmark: migrating 1,000 tenant schemas with ``SchemaTenantMigrator.migrate_all``.

(a) Nothing pending: ``migrate_all`` (the registry's rows at head, confirmed by one catalog
    query), and ``migrate_all(verify=True)`` (every version table read in one UNION ALL
    query), each against a loop of ``alembic upgrade head`` per schema through Alembic's
    command API on the connection and config the runner uses (``SET LOCAL search_path``
    to the schema, ``tenant_schema`` handed to the shared env.py). Target: >= 50x.
(b) One pending revision adding a nullable column, from a throwaway copy of core_db's
    migrations (the repository's are never touched): ``migrate_all`` with 2 workers (this
    process, and a helper when the probe says one is worth starting), with 1, and the same
    DDL and version bookkeeping in one psql script over all schemas, one transaction per
    schema (the floor); ``--rounds`` rounds, alternated, medians.
    Prints ``ratio pending-column = X`` (workers=2 / psql; target <= 2.0).
(c) Provisioning one tenant: ``SchemaTenantMigrator.create`` (one migrator, as a service
    keeps it) against a new psycopg connection running the template tenant's pg_dump (CREATE
    SCHEMA, tables, indexes, version row) and the registry INSERT in one transaction;
    alternated, medians. Prints ``ratio provision = X`` (target <= 2.0).

    uv run python bench/tenancy_migrations.py [--tenants 1000] [--workers 2] [--rounds 3]

Not a test: it prints numbers. One tenant is provisioned with ``SchemaTenantMigrator.create``;
the others are copies of its schema (see ``tenancy_sessions.clone_tenants``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # mypy runs from the repository root; the script runs from bench/
    from bench.tenancy_sessions import clone_tenants, psycopg_kwargs, slug_of, stop_on_sigterm
else:
    from tenancy_sessions import clone_tenants, psycopg_kwargs, slug_of, stop_on_sigterm

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from db_kit.config import DatabaseConfig
    from db_kit.migrations import SchemaTenantMigrator
    from db_kit.migrations import TenantReport as TenantResult

COLUMN = "bench_note"
REVISION = "bench0000001"

EXTRA_REVISION = '''"""bench: one nullable column

Revision ID: {revision}
Revises: {down}
"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("auth_users", sa.Column("{column}", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("auth_users", "{column}")
'''


def pending_config(root: Path, down: str) -> DatabaseConfig:
    """core_db's config with a temporary copy of its migrations plus one more revision."""
    import core_db
    from core_db import CoreSettings
    from db_kit.config import DatabaseConfig

    package = f"bench_core_{uuid.uuid4().hex[:8]}"
    (root / package).mkdir()
    (root / package / "__init__.py").write_text("")
    shutil.copytree(
        core_db.CONFIG.migrations_dir,
        root / package / "migrations",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (root / package / "migrations" / "versions" / f"{REVISION}_bench_note.py").write_text(
        EXTRA_REVISION.format(revision=REVISION, down=down, column=COLUMN)
    )
    # Worker processes (spawn) start with this sys.path too.
    sys.path.insert(0, str(root))
    return DatabaseConfig(
        name="core (bench copy)",
        settings_class=CoreSettings,
        models="core_db.models",
        migrations=f"{package}.migrations",
        tenancy=core_db.CONFIG.tenancy,
    )


def psql(url: URL, script: str, folder: Path) -> None:
    """Run ``script`` with the embedded wheel's psql, stopping at the first error."""
    from psycopg.conninfo import make_conninfo

    from db_tools.embedded import bin_dir

    path = folder / f"script_{uuid.uuid4().hex[:8]}.sql"
    path.write_text("SET client_min_messages = warning;\n" + script)
    subprocess.run(
        [
            str(bin_dir() / "psql"),
            *("-X", "-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null"),
            *("--dbname", make_conninfo(**psycopg_kwargs(url)), "-f", str(path)),
        ],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def reset(url: URL, schemas: list[str], head: str, folder: Path) -> None:
    """Every tenant back at ``head`` without the column (batches of 100 per transaction)."""
    lines: list[str] = []
    for i, schema in enumerate(schemas):
        if i % 100 == 0:
            lines.append("BEGIN;")
        lines.append(f'ALTER TABLE "{schema}".auth_users DROP COLUMN IF EXISTS {COLUMN};')
        lines.append(f"UPDATE \"{schema}\".alembic_version SET version_num = '{head}';")
        if i % 100 == 99 or i == len(schemas) - 1:
            lines.append("COMMIT;")
    lines.append(f"UPDATE core.tenants SET revision = '{head}', last_error = NULL;")
    psql(url, "\n".join(lines), folder)


def check(url: URL, schemas: list[str], revision: str, *, column: bool) -> None:
    import psycopg

    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        (found,) = conn.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'auth_users' AND column_name = %s AND table_schema = ANY(%s)",
            (COLUMN, schemas),
        ).fetchall()
        (versions,) = conn.execute(
            "SELECT count(*) FROM core.tenants WHERE revision = %s", (revision,)
        ).fetchall()
    assert found[0] == (len(schemas) if column else 0), (found, column)
    assert versions[0] == len(schemas), (versions, revision)


def floor_script(schemas: list[str], slugs: list[str]) -> str:
    lines: list[str] = []
    for schema, slug in zip(schemas, slugs, strict=True):
        lines += [
            "BEGIN;",
            f'SET LOCAL search_path TO "{schema}";',
            f"ALTER TABLE auth_users ADD COLUMN {COLUMN} text;",
            f"UPDATE alembic_version SET version_num = '{REVISION}';",
            f"UPDATE core.tenants SET revision = '{REVISION}', migrated_at = now(), "
            f"last_error = NULL WHERE slug = '{slug}';",
            "COMMIT;",
        ]
    return "\n".join(lines)


def alembic_loop(tenants: SchemaTenantMigrator) -> float:
    """``alembic upgrade head`` per schema, as the runner drives it, with nothing skipped."""
    from alembic import command
    from sqlalchemy import text

    with tenants.connect() as conn:
        rows = tenants.tenants(conn)
        conn.rollback()
        began = time.perf_counter()
        for row in rows:
            with conn.begin():
                conn.execute(text(f'SET LOCAL search_path TO "{row.schema}"'))
                cfg = tenants.migrator.alembic_config(conn)
                cfg.attributes["tenant_schema"] = row.schema
                command.upgrade(cfg, "head")
        return time.perf_counter() - began


def summary(results: list[TenantResult], seconds: float) -> str:
    states: dict[str, int] = {}
    for r in results:
        states[str(r.status)] = states.get(str(r.status), 0) + 1
    worked = [r.seconds for r in results if r.status == "migrated"]
    per_tenant = f", {statistics.mean(worked) * 1e3:.0f} ms per tenant" if worked else ""
    return f"{seconds:7.2f} s  {states}{per_tenant}"


def run(args: argparse.Namespace, url: URL, folder: Path) -> None:
    import core_db
    from core_db.config import REGISTRY
    from db_kit.migrations.migrator import Migrator
    from db_kit.migrations.schema_tenants import SchemaTenantMigrator

    began = time.perf_counter()
    Migrator(REGISTRY, url).upgrade()
    SchemaTenantMigrator(core_db.CONFIG, url).create(slug_of(0))
    print(
        f"setup  registry + 1 tenant (SchemaTenantMigrator.create): {time.perf_counter() - began:.1f} s"
    )
    began = time.perf_counter()
    slugs = [slug_of(i) for i in range(args.tenants)]
    clone_tenants(url, slug_of(0), slugs[1:])
    print(f"setup  {args.tenants - 1} tenant schemas cloned: {time.perf_counter() - began:.1f} s")
    schemas = [f"tenant_{s}" for s in slugs]
    tenants = SchemaTenantMigrator(core_db.CONFIG, url)
    head = tenants.head()

    print(f"\n(a) nothing pending, {args.tenants} tenants", flush=True)
    medians: dict[bool, tuple[float, list[TenantResult]]] = {}
    for verify in (False, True):
        runs = []
        for _ in range(3):
            began = time.perf_counter()
            results = tenants.migrate_all(workers=args.workers, verify=verify)
            runs.append(time.perf_counter() - began)
            assert [r.status for r in results] == ["up to date"] * args.tenants, results[:3]
        medians[verify] = (statistics.median(runs), results)
    for verify, label in ((False, "migrate_all        "), (True, "migrate_all verify ")):
        runner, results = medians[verify]
        print(f"    {label}(median of 3)   {summary(results, runner)}", flush=True)
    loop = alembic_loop(tenants)
    print(
        f"    alembic upgrade head per schema   {loop:7.2f} s  "
        f"{loop / args.tenants * 1e3:.0f} ms per tenant",
        flush=True,
    )
    for verify, label in ((False, "migrate_all"), (True, "migrate_all verify")):
        ratio = loop / medians[verify][0]
        verdict = "meets" if ratio >= 50 else "BELOW"
        print(f"    ratio loop / {label} = {ratio:.0f}x ({verdict} the 50x target)")

    print(f"\n(b) one pending nullable column, {args.tenants} tenants", flush=True)
    pending = SchemaTenantMigrator(pending_config(folder, head), url)
    assert pending.head() == REVISION
    ours = f"workers={args.workers}"
    subjects: list[tuple[str, int]] = [(ours, args.workers), ("workers=1", 1), ("psql", 0)]
    script = floor_script(schemas, slugs)
    times: dict[str, list[float]] = {label: [] for label, _ in subjects}
    for round_ in range(args.rounds):
        # Alternated, the order rotating each round: the machine's load hits all three.
        order = subjects[round_ % 3 :] + subjects[: round_ % 3]
        for label, workers in order:
            reset(url, schemas, head, folder)
            check(url, schemas, head, column=False)
            if not workers:
                began = time.perf_counter()
                psql(url, script, folder)
                times["psql"].append(time.perf_counter() - began)
                check(url, schemas, REVISION, column=True)
                print(
                    f"    [{round_ + 1}] one psql script (the floor)   {times['psql'][-1]:7.2f} s  "
                    f"{times['psql'][-1] / args.tenants * 1e3:.2f} ms per tenant",
                    flush=True,
                )
                continue
            stamps: list[float] = []

            def stamp(result: TenantResult, stamps: list[float] = stamps) -> None:
                stamps.append(time.perf_counter())

            began = time.perf_counter()
            results = pending.migrate_all(workers=workers, on_result=stamp)
            times[label].append(time.perf_counter() - began)
            failed = [r for r in results if r.failed]
            assert not failed, failed[:3]
            check(url, schemas, REVISION, column=True)
            steady = (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)
            pids = len({r.pid for r in results})
            print(
                f"    [{round_ + 1}] migrate_all {label:<18}{summary(results, times[label][-1])}; "
                f"{pids} process(es); first result after {stamps[0] - began:.3f} s, then one "
                f"every {steady * 1e3:.2f} ms",
                flush=True,
            )
    median = {label: statistics.median(values) for label, values in times.items()}
    paired = [a / b for a, b in zip(times[ours], times["psql"], strict=True)]
    print(
        f"    medians of {args.rounds}: {ours} {median[ours]:.2f} s, workers=1 "
        f"{median['workers=1']:.2f} s, psql {median['psql']:.2f} s; per round {ours} / psql: "
        + ", ".join(f"{r:.2f}" for r in paired)
    )
    ratio = median[ours] / median["psql"]
    print(
        f"ratio pending-column = {ratio:.2f} ({'meets' if ratio <= 2.0 else 'ABOVE'} the 2.0 "
        f"target; workers=1 / psql = {median['workers=1'] / median['psql']:.2f})",
        flush=True,
    )

    provision(args, url, slugs[0])


def provision(args: argparse.Namespace, url: URL, template: str) -> None:
    """(c) ``SchemaTenantMigrator.create`` against the raw floor: a new connection, one
    transaction with the template tenant's DDL (pg_dump of its schema: CREATE SCHEMA, the
    tables, indexes and version row) and the registry row, commit."""
    import psycopg

    import core_db
    from db_kit.migrations.schema_tenants import SchemaTenantMigrator

    if TYPE_CHECKING:
        from bench.tenancy_sessions import dump_schema
    else:
        from tenancy_sessions import dump_schema

    print(f"\n(c) provision one tenant, {args.rounds * 5} of each, alternated", flush=True)
    tenants = SchemaTenantMigrator(core_db.CONFIG, url)
    source = tenants.tenancy.schema_for(template)
    script = dump_schema(url, source)
    head = tenants.head()
    register = (
        "INSERT INTO core.tenants (slug, name, schema_name, status, revision, migrated_at) "
        "VALUES (%s, %s, %s, 'active', %s, now())"
    )

    def raw(slug: str) -> float:
        schema = tenants.tenancy.schema_for(slug)
        began = time.perf_counter()
        with psycopg.connect(**psycopg_kwargs(url)) as conn:
            conn.execute(script.replace(source, schema))
            conn.execute(register, (slug, slug, schema, head))
        return time.perf_counter() - began

    def ours(slug: str) -> float:
        began = time.perf_counter()
        tenants.create(slug)
        return time.perf_counter() - began

    first = ours("prov_first")  # renders the revisions once (per migrator)
    times: dict[str, list[float]] = {"ours": [], "raw": []}
    for i in range(args.rounds * 5):
        pair = [("ours", ours), ("raw", raw)]
        for label, fn in pair if i % 2 == 0 else pair[::-1]:
            times[label].append(fn(f"prov_{label}_{i}"))
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        shapes = conn.execute(
            "SELECT n.nspname, count(*) FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname LIKE 'tenant_prov_%%' GROUP BY 1"
        ).fetchall()
        versions = conn.execute(
            "SELECT count(*) FROM core.tenants WHERE slug LIKE 'prov_%%' AND revision = %s "
            "AND status = 'active'",
            (head,),
        ).fetchall()
    assert len({n for _, n in shapes}) == 1, shapes  # the same relations in every schema
    assert len(shapes) == versions[0][0] == 1 + 2 * args.rounds * 5, (shapes, versions)
    median = {label: statistics.median(values) for label, values in times.items()}
    print(
        f"    SchemaTenantMigrator.create   median {median['ours'] * 1e3:6.1f} ms "
        f"(first, rendering the revisions: {first * 1e3:.1f} ms)\n"
        f"    raw connect + pg_dump DDL     median {median['raw'] * 1e3:6.1f} ms"
    )
    ratio = median["ours"] / median["raw"]
    print(f"ratio provision = {ratio:.2f} ({'meets' if ratio <= 2.0 else 'ABOVE'} the 2.0 target)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000, help="tenant schemas")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of (b)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of (b)/(c)")
    args = parser.parse_args()
    if args.tenants < 2:
        parser.error("--tenants must be at least 2")

    import core_db
    from db_tools.testing import start_server, url_string

    stop_on_sigterm()
    started = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix="bench_pg_"))
    folder = Path(tempfile.mkdtemp(prefix="bench_migrations_"))
    try:
        # start_server stops its server when this block ends, or when this process dies.
        with start_server(data_dir) as postgres:
            url = postgres.create_database("bench_migrations")
            os.environ["ENVIRONMENT"] = "production"  # no statement logging
            os.environ["DATABASE_URL"] = url_string(url)
            core_db.CONFIG.reset()
            print(f"PostgreSQL: {postgres.source}; {os.cpu_count()} CPUs", flush=True)
            try:
                run(args, url, folder)
            finally:
                postgres.drop_all()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)
        print(f"total {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
