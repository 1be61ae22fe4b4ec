"""Benchmark: GET /auth/me on my_api against a minimal FastAPI + SQLAlchemy app.

Both serve the same request (a bearer token resolved to the user and roles in one query,
the one in ``AuthService.user_for_token``) on the same fresh PostgreSQL database, each in its
own uvicorn process, loaded one at a time by a client in this process (httpx, or raw HTTP/1.1
with ``--client raw``). Rounds alternate which app goes first so neither gets the warmer
machine systematically. Besides requests/s it reports the CPU each server spent per request,
which a busy or small machine disturbs far less.

    uv run python bench/current_user.py [--client raw] [--workers 10] [--requests 2000]

Not a test: it prints numbers (target: my_api at >= 0.9 of the baseline's requests/s), and
``ratio request-cpu = X``: the baseline's median server CPU per request over my_api's
(issue 15, target >= 0.95).
"""

import argparse
import asyncio
import hashlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import httpx

APPS = ("my_api", "baseline")
SERVER_CPUS = "BENCH_SERVER_CPUS"  # tells a server child which CPUs to run on


# the servers (run in child processes) ----------------------------------------------------


def baseline_app(url: str) -> object:
    """The same lookup written as a small app would: one engine, a session per request."""
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import BaseModel
    from sqlalchemy import func, select
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    import core_db
    from core_db.models import AuthSession, AuthUser, Role, UserRole
    from db_kit.engine import engine_kwargs

    # Same pool, timeouts, pre-ping and connect arguments as my_api's engine.
    engine = create_async_engine(url, **engine_kwargs(core_db.CONFIG.settings()))
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    bearer = HTTPBearer(auto_error=False)

    class UserOut(BaseModel):
        id: int
        email: str
        username: str | None
        roles: list[str]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/auth/me")
    async def me(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> UserOut:
        if credentials is None:
            raise HTTPException(401)
        digest = hashlib.sha256(credentials.credentials.encode()).hexdigest()
        stmt = (
            select(
                AuthUser.id,
                AuthUser.email,
                AuthUser.username,
                func.array_remove(func.array_agg(Role.name), None),
            )
            .select_from(AuthSession)
            .join(AuthUser, AuthUser.id == AuthSession.user_id)
            .outerjoin(UserRole, UserRole.user_id == AuthUser.id)
            .outerjoin(Role, Role.id == UserRole.role_id)
            .where(
                AuthSession.token_hash == digest,
                AuthSession.revoked_at.is_(None),
                AuthSession.expires_at > func.now(),
                AuthUser.is_active.is_(True),
            )
            .group_by(AuthUser.id)
        )
        async with sessions() as s:
            row = (await s.execute(stmt)).first()
        if row is None:
            raise HTTPException(401)
        return UserOut(id=row[0], email=row[1], username=row[2], roles=sorted(row[3] or ()))

    return app


def exit_with_parent() -> None:
    """Stop this server when the benchmark process ends, however it ends."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def serve(which: str, port: int) -> None:
    import uvicorn

    exit_with_parent()
    cpus = os.environ.get(SERVER_CPUS)
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    url = os.environ["DATABASE_URL"]  # not on the command line, where ps would show it

    if which == "my_api":
        import core_db
        from db_kit.database import SQLAlchemyDatabase
        from my_api.main import create_app

        app: object = create_app(SQLAlchemyDatabase(core_db.CONFIG, url=url))
    else:
        app = baseline_app(url)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)  # type: ignore[arg-type]


# the harness -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    base_url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(which: str) -> Server:
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve", which, str(port)])
    server = Server(which, process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{which} exited with {process.returncode} before serving")
        try:
            if httpx.get(f"{server.base_url}/health/live", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{which} did not start within 60 s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Round:
    app: str
    requests: int
    seconds: float
    latencies: list[float]
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    connections: int = 0  # server connections PostgreSQL accepted during the round

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms(self) -> float:
        """Server CPU per request: steadier than req/s when the machine is shared."""
        return self.server_cpu / self.requests * 1e3


async def load(app: str, base_url: str, headers: dict[str, str], total: int, workers: int) -> Round:
    """``total`` GET /auth/me from ``workers`` concurrent loops on kept-alive connections."""
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    latencies: list[float] = []
    remaining = iter(range(total))
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits) as client:

        async def worker() -> None:
            for _ in remaining:
                began = time.perf_counter()
                r = await client.get("/auth/me")
                latencies.append(time.perf_counter() - began)
                if r.status_code != 200:
                    raise RuntimeError(f"{base_url}/auth/me answered {r.status_code}: {r.text}")

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        elapsed = time.perf_counter() - began
    return Round(app, total, elapsed, latencies)


async def load_raw(
    app: str, base_url: str, headers: dict[str, str], total: int, workers: int
) -> Round:
    """The same load from pre-encoded HTTP/1.1 requests on asyncio streams.

    httpx spends about as much CPU per request as the servers do; on a small machine it,
    not the server, sets the pace, and every app then looks equally fast.
    """
    url = httpx.URL(base_url)
    lines = ["GET /auth/me HTTP/1.1", f"Host: {url.host}:{url.port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    latencies: list[float] = []
    remaining = iter(range(total))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(url.host, url.port)
        try:
            for _ in remaining:
                began = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                body = await reader.readexactly(int(length.group(1)) if length else 0)
                latencies.append(time.perf_counter() - began)
                if head[9:12] != b"200":
                    raise RuntimeError(f"{base_url}/auth/me answered {head[9:12]!r}: {body!r}")
        finally:
            writer.close()
            await writer.wait_closed()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return Round(app, total, time.perf_counter() - began, latencies)


def login(base_url: str) -> dict[str, str]:
    creds = {"email": "bench@example.com", "password": "bench password 1"}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        client.post("/auth/register", json=creds).raise_for_status()
        token = client.post("/auth/login", json=creds).raise_for_status().json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def sessions_opened(admin_url: str, database: str) -> int:
    """Connections ``database`` has accepted so far (``pg_stat_database.sessions``).

    A pool that is smaller than the load opens (and closes) overflow connections all the
    time, at ~0.3-0.6 ms of server CPU each. Counters reach the view when a backend ends
    (overflow connections do) or at most a second after a transaction, hence the pause.
    """
    import psycopg

    time.sleep(1.1)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", (database,)
        ).fetchone()
    return int(row[0]) if row else 0


def run(args: argparse.Namespace, admin_url: str, database: str) -> None:
    servers: dict[str, Server] = {}
    try:
        for which in APPS:
            servers[which] = start(which)
        headers = login(servers["my_api"].base_url)
        bodies = {
            which: httpx.get(f"{s.base_url}/auth/me", headers=headers).json()
            for which, s in servers.items()
        }
        assert bodies["my_api"] == bodies["baseline"], bodies

        def measure(which: str, total: int) -> Round:
            server = servers[which]
            opened = sessions_opened(admin_url, database)
            cpu_before, client_before = cpu_seconds(server.process.pid), time.process_time()
            generate = load_raw if args.client == "raw" else load
            result = asyncio.run(generate(which, server.base_url, headers, total, args.workers))
            result.server_cpu = cpu_seconds(server.process.pid) - cpu_before
            result.client_cpu = time.process_time() - client_before
            result.connections = sessions_opened(admin_url, database) - opened
            return result

        for which in APPS:
            measure(which, args.warmup)
        results: list[Round] = []
        print(
            f"{args.rounds} rounds x {args.requests} requests, {args.workers} workers, "
            f"{args.client} client"
        )
        print("cpu ms/req: CPU time the server process (the client) spent per request")
        print("new conns: connections the app opened to PostgreSQL during the round")
        print(
            f"{'round':>5}  {'app':<9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'server cpu':>10} {'client cpu':>10} {'new conns':>9}"
        )
        for i in range(args.rounds):
            order = APPS if i % 2 == 0 else APPS[::-1]
            for which in order:
                r = measure(which, args.requests)
                results.append(r)
                p50, p99 = percentile(r.latencies, 50) * 1e3, percentile(r.latencies, 99) * 1e3
                client_ms = r.client_cpu / r.requests * 1e3
                print(
                    f"{i + 1:>5}  {which:<9} {r.rps:>8.0f} {p50:>7.2f} {p99:>7.2f} "
                    f"{r.cpu_ms:>10.3f} {client_ms:>10.3f} {r.connections:>9}"
                )
        rps, cpu = {}, {}
        for which in APPS:
            mine = [r for r in results if r.app == which]
            rps[which] = sum(r.requests for r in mine) / sum(r.seconds for r in mine)
            cpu[which] = sum(r.server_cpu for r in mine) / sum(r.requests for r in mine) * 1e3
            print(
                f"total  {which:<9} {rps[which]:>8.0f} req/s   {cpu[which]:.3f} server cpu ms/req"
            )
        ratio = rps["my_api"] / rps["baseline"]
        pairs = [
            a.rps / b.rps
            for a, b in zip(results[0::2], results[1::2], strict=True)
            for a, b in [(a, b) if a.app == "my_api" else (b, a)]
        ]
        verdict = "meets" if ratio >= 0.9 else "BELOW"
        print(f"ratio  my_api / baseline req/s = {ratio:.3f} ({verdict} the 0.9 target)")
        print(f"       per round: {', '.join(f'{p:.3f}' for p in pairs)}")
        client = sum(r.client_cpu for r in results) / sum(r.requests for r in results) * 1e3
        if client > 0.5 * min(cpu.values()):
            print(
                f"note   the client spent {client:.2f} ms CPU per request, as much as a server: "
                "it probably set the pace, which pulls the req/s ratio towards 1 "
                "(try --client raw)"
            )
        print(
            "ratio  baseline / my_api server cpu per request = "
            f"{cpu['baseline'] / cpu['my_api']:.3f} (the req/s ratio a CPU-bound server would see)"
        )
        # The issue's figure: medians of the rounds' server CPU per request (alternating
        # rounds, one run), baseline over my_api; target at least 0.95.
        median = {
            which: statistics.median(r.cpu_ms for r in results if r.app == which) for which in APPS
        }
        print(f"ratio request-cpu = {median['baseline'] / median['my_api']:.3f}")
    finally:
        for server in servers.values():
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10, help="concurrent client loops")
    parser.add_argument("--requests", type=int, default=2000, help="requests per app per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=300, help="requests per app before rounds")
    parser.add_argument(
        "--environment",
        default="production",
        help="ENVIRONMENT of both servers (development logs every query at INFO level)",
    )
    parser.add_argument(
        "--client",
        choices=("httpx", "raw"),
        default="httpx",
        help="load generator: httpx.AsyncClient, or raw HTTP/1.1 on asyncio streams (cheaper)",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not give the servers a CPU of their own (default: CPU 0 for the servers, "
        "the others for the load generator and PostgreSQL, when there are at least 2)",
    )
    parser.add_argument("--serve", nargs=2, metavar=("APP", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        which, port = args.serve
        serve(which, int(port))
        return

    import core_db
    from db_kit.migrations.migrator import Migrator
    from db_tools.testing import start_server, url_string

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pinned = not args.no_pin and len(cpus) >= 2
    if pinned:
        # The server under test gets a CPU of its own, so req/s measures it rather than
        # the load generator; PostgreSQL, started below, inherits this process's CPUs.
        os.environ[SERVER_CPUS] = str(cpus[0])
        os.sched_setaffinity(0, set(cpus[1:]))
    data_dir = Path(tempfile.mkdtemp(prefix="bench_pg_"))
    try:
        # start_server stops its server when this block ends, or when this process dies.
        with start_server(data_dir) as postgres:
            url = postgres.create_database("bench")
            # Children inherit these: both apps read the same settings (pool size, timeouts).
            os.environ["ENVIRONMENT"] = args.environment
            os.environ["DATABASE_URL"] = url_string(url)
            core_db.CONFIG.reset()
            Migrator(core_db.CONFIG, url).upgrade()
            placement = (
                f"servers on CPU {cpus[0]}, client and PostgreSQL on CPUs {cpus[1:]}"
                if pinned
                else "not pinned"
            )
            print(
                f"PostgreSQL: {postgres.source}; ENVIRONMENT={args.environment}; {placement}",
                flush=True,
            )
            try:
                run(
                    args,
                    url_string(postgres.admin_url.set(drivername="postgresql")),
                    url.database or "",
                )
            finally:
                postgres.drop_all()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
