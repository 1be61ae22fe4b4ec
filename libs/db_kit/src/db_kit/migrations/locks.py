"""Migration DDL that never waits forever for a lock: timeouts, retries, named blockers.

An ``ALTER TABLE`` queued behind a long transaction takes its place in the lock queue, and
every query on that table then waits behind the ``ALTER``: one idle-in-transaction session
can stop an application. Every migration connection therefore runs with ``lock_timeout``
and ``statement_timeout`` (``<PREFIX>MIGRATION_LOCK_TIMEOUT_MS``,
``<PREFIX>MIGRATION_STATEMENT_TIMEOUT_MS``); a revision that cannot take its lock in time is
rolled back and run again after a pause, a few times (``<PREFIX>MIGRATION_LOCK_RETRIES``), as
GitLab's ``with_lock_retries`` does. From the first timeout on, a second connection watches
which backends block the migration, so the final error names their pid and query.

The migration's own advisory locks are taken with both timeouts off: waiting for another
deploy to finish is the point of those locks.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import psycopg
from sqlalchemy import Connection, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL

from db_kit.errors import sqlstate
from db_shared.errors import DatabaseError

if TYPE_CHECKING:
    from db_kit.settings import DatabaseSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"
# Pauses between attempts (seconds), doubled each time up to the cap.
FIRST_PAUSE = 0.5
MAX_PAUSE = 8.0
TIMEOUTS_SET = "db_kit_migration_timeouts"


def set_migration_timeouts(conn: Connection, settings: DatabaseSettings) -> None:
    """Session-level ``lock_timeout`` and ``statement_timeout`` for a migration connection.

    Inside a transaction the values are transaction-local. Done once per connection.
    """
    if conn.info.get(TIMEOUTS_SET):
        return
    local = conn.in_transaction()
    conn.execute(
        text("SELECT set_config('lock_timeout', :lock, :local), "
             "set_config('statement_timeout', :stmt, :local)"),
        {
            "lock": f"{settings.migration_lock_timeout_ms}ms",
            "stmt": f"{settings.migration_statement_timeout_ms}ms",
            "local": local,
        },
    )  # fmt: skip
    if not local:
        conn.commit()
        conn.info[TIMEOUTS_SET] = True


def offline_timeouts_sql(settings: DatabaseSettings) -> list[str]:
    """The same timeouts as statements at the top of an offline (``--sql``) script."""
    return [
        f"SET lock_timeout = '{int(settings.migration_lock_timeout_ms)}ms'",
        f"SET statement_timeout = '{int(settings.migration_statement_timeout_ms)}ms'",
    ]


@contextlib.contextmanager
def no_lock_timeouts(conn: Connection) -> Iterator[None]:
    """Both timeouts off for the block: the wait for a migration advisory lock is wanted.

    Inside a transaction the change is transaction-local and restored after the block;
    outside one it is session-level and restored (and committed) after the block.
    """
    local = conn.in_transaction()
    before = conn.execute(
        text("SELECT current_setting('lock_timeout'), current_setting('statement_timeout'), "
             "set_config('lock_timeout', '0', :local), "
             "set_config('statement_timeout', '0', :local)"),
        {"local": local},
    ).one()  # fmt: skip
    try:
        yield
    finally:
        if conn.in_transaction() or local:
            conn.execute(
                text("SELECT set_config('lock_timeout', :l, :local), "
                     "set_config('statement_timeout', :s, :local)"),
                {"l": before[0], "s": before[1], "local": local},
            )  # fmt: skip
        else:
            conn.execute(
                text("SELECT set_config('lock_timeout', :l, false), "
                     "set_config('statement_timeout', :s, false)"),
                {"l": before[0], "s": before[1]},
            )  # fmt: skip
            conn.commit()


# who blocks us --------------------------------------------------------------------------


@dataclass(frozen=True)
class Blocker:
    """A backend holding a lock the migration waited for."""

    pid: int
    state: str | None
    user: str | None
    application: str | None
    transaction_seconds: float | None
    query: str | None

    def describe(self) -> str:
        parts = [f"pid {self.pid}"]
        if self.state:
            age = (
                f" for {self.transaction_seconds:.0f} s"
                if self.transaction_seconds is not None
                else ""
            )
            parts.append(f"{self.state}{age}")
        if self.user:
            parts.append(f"user {self.user}")
        if self.application:
            parts.append(f"application {self.application!r}")
        # The statement's shape, not its values: quoted literals could hold a secret.
        query = _LITERAL.sub("'…'", " ".join((self.query or "").split()))
        if query:
            parts.append(f"last query: {query[:160]!r}")
        return ", ".join(parts)


_LITERAL = re.compile(r"'(?:[^']|'')*'")

_BLOCKERS_SQL = """
SELECT a.pid, a.state, a.usename, a.application_name,
       EXTRACT(EPOCH FROM (now() - a.xact_start))::float8, a.query
FROM pg_catalog.pg_stat_activity a
WHERE a.pid = ANY(pg_catalog.pg_blocking_pids(%s))
ORDER BY a.xact_start NULLS LAST
"""


class BlockerWatch:
    """Polls, from its own connection, which backends block backend ``pid``.

    Keeps the last non-empty answer: when a lock wait ends in a timeout, the statement
    is gone and so is the evidence; the watch saw it while it lasted.
    """

    def __init__(self, url: URL, pid: int, *, interval: float = 0.1, connect_timeout: int = 5):
        self.url = url
        self.pid = pid
        self.interval = interval
        self.connect_timeout = connect_timeout
        self.blockers: list[Blocker] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> BlockerWatch:
        self._thread = threading.Thread(target=self._run, name="db-kit-blocker-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            conn = psycopg.connect(
                host=self.url.host,
                port=self.url.port or 5432,
                user=self.url.username,
                password=self.url.password,
                dbname=self.url.database,
                connect_timeout=self.connect_timeout,
                application_name="db-kit migration lock watch",
                autocommit=True,
            )
        except psycopg.Error as exc:
            log.debug("blocker watch could not connect: %s", exc)
            return
        with conn:
            while not self._stop.is_set():
                try:
                    rows = conn.execute(_BLOCKERS_SQL, (self.pid,)).fetchall()
                except psycopg.Error as exc:
                    log.debug("blocker watch stopped: %s", exc)
                    return
                if rows:
                    self.blockers = [Blocker(*row) for row in rows]
                self._stop.wait(self.interval)


class MigrationLockTimeoutError(DatabaseError):
    """DDL could not take its lock within the lock timeout, attempt after attempt."""

    def __init__(self, message: str, blockers: list[Blocker]) -> None:
        self.blockers = blockers
        super().__init__(message)


def lock_timeout_message(
    what: str, settings: DatabaseSettings, attempts: int, blockers: list[Blocker]
) -> str:
    prefix = str(settings.model_config.get("env_prefix", "")).upper()
    if blockers:
        by = "; ".join(b.describe() for b in blockers)
        cause = f"blocked by {by}"
        fix = (
            f"End that transaction (SELECT pg_terminate_backend({blockers[0].pid})) or wait "
            "for it, then run the migration again"
        )
    else:
        cause = "the blocking transaction ended before it could be named"
        fix = "Run the migration again"
    return (
        f"{what} could not take a lock within {settings.migration_lock_timeout_ms} ms "
        f"({attempts} attempt(s)): {cause}. It was rolled back. {fix}, or raise "
        f"{prefix}MIGRATION_LOCK_TIMEOUT_MS / {prefix}MIGRATION_LOCK_RETRIES."
    )


def backend_pid(conn: Connection) -> int:
    pid: int = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    if conn.in_transaction():
        conn.rollback()
    return pid


def with_lock_retries(
    attempt: Callable[[], T],
    *,
    conn: Connection,
    url: URL,
    settings: DatabaseSettings,
    what: Callable[[], str],
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``attempt`` (one or more revisions, each rolled back when it fails) and retry it
    when a lock timeout ended it; after the last try raise ``MigrationLockTimeoutError``
    naming ``what()`` (the revision) and the blocking backends.
    """
    attempts = settings.migration_lock_retries + 1
    watch: BlockerWatch | None = None
    try:
        for number in range(1, attempts + 1):
            try:
                return attempt()
            except sa_exc.DBAPIError as exc:
                if sqlstate(exc) != LOCK_NOT_AVAILABLE:
                    raise
                if conn.in_transaction():
                    conn.rollback()
                if number == attempts:
                    blockers = watch.blockers if watch is not None else []
                    raise MigrationLockTimeoutError(
                        lock_timeout_message(what(), settings, attempts, blockers), blockers
                    ) from exc
                if watch is None:
                    watch = BlockerWatch(url, backend_pid(conn)).start()
                pause = min(MAX_PAUSE, FIRST_PAUSE * 2 ** (number - 1))
                log.warning(
                    "%s: lock timeout (attempt %d of %d); retrying in %.1f s",
                    what(), number, attempts, pause,
                )  # fmt: skip
                sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        if watch is not None:
            watch.stop()
