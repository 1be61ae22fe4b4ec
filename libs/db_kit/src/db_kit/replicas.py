"""Read replicas: which replica (if any) may serve a read-only unit of work.

A ``ReplicaSet`` holds the async engines of one server's streaming replicas and, sampled
at most every ``SAMPLE_INTERVAL`` seconds per process, the primary's WAL position
(``pg_current_wal_lsn()``) and each replica's replay position
(``pg_last_wal_replay_lsn()``). From those it knows, without a query per read:

- **lag**: how long ago the primary was first seen past the replica's replay position
  (0 when the replica has replayed everything the primary had written at the last
  sample). An idle system has no lag, unlike ``now() - pg_last_xact_replay_timestamp()``.
  The bound is honoured to within one sampling interval.
- **read-your-writes**: a replica serves a context that must see position P
  (``db_shared.positions``) only when its sampled replay position is at least P; replay
  only moves forward, so an old sample that says so is still true.

A replica that is down (refused, timed out, promoted), lagging past ``max_lag_ms`` or
behind the required position is skipped for the primary, never an error: the change of
state is logged once, and ``db_replica_skips_total`` counts skips by reason.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from db_kit.engine import cache_schema_translation, engine_kwargs
from db_kit.observability import cursor_factories, instrument
from db_kit.settings import DatabaseSettings, ServerSettings
from db_shared.positions import parse_lsn

__all__ = ["READ_SESSIONS", "REPLICA_LAG", "REPLICA_SKIPS", "ReplicaSet", "ReplicaState"]

log = logging.getLogger(__name__)

SAMPLE_INTERVAL = 0.2  # seconds between samples of the primary's and replicas' positions
DOWN_BACKOFF = 2.0  # seconds a replica that failed is left alone before it is tried again
HISTORY = 512  # primary positions kept (one per change): far more than any lag bound needs
BIND_CACHE = 10_000  # translated engine views per replica (one per tenant schema)

REPLICA_LAG = Gauge(
    "db_replica_lag_seconds",
    "Replay lag of each read replica as last sampled (NaN: down or unknown).",
    ["database", "replica"],
)
REPLICA_SKIPS = Counter(
    "db_replica_skips",
    "Read sessions a replica did not serve, by reason (down, lagging, behind_position).",
    ["database", "replica", "reason"],
)
READ_SESSIONS = Counter(
    "db_read_sessions",
    "Read-only units of work, by where they ran (replica or primary).",
    ["database", "target"],
)

_PRIMARY_LSN = text("SELECT pg_current_wal_lsn()::text")
_REPLAY_LSN = text("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text")


@dataclass(eq=False)
class _Replica:
    name: str
    url: URL
    engine: AsyncEngine
    replay: int | None = None  # sampled replay position; None: unknown or not usable
    down_until: float = 0.0
    state: str = "unknown"  # ok, lagging, down, not_a_replica: logged when it changes
    reason: str = ""
    binds: OrderedDict[str, AsyncEngine] = field(default_factory=OrderedDict)


@dataclass(frozen=True)
class ReplicaState:
    """One replica as health reports it: a name (no host), a state, its lag."""

    name: str
    state: str  # ok, lagging, down, not_a_replica, unknown
    lag_ms: float | None


class ReplicaSet:
    """The replicas of one server, for one ``SQLAlchemyDatabase``.

    ``primary`` returns the primary's async engine (sampled for its WAL position).
    """

    def __init__(
        self,
        server: ServerSettings,
        settings: DatabaseSettings,
        *,
        database: str,
        primary: Any,
        prepare: bool = True,
    ) -> None:
        self.server = server
        self.database = database
        self.max_lag_ms = server.max_lag_ms
        self._primary = primary
        self._timeout = float(settings.connect_timeout)
        _, async_cursor = cursor_factories(database, settings)
        self.replicas: list[_Replica] = []
        for name, url in zip(server.replica_names(), server.replicas, strict=True):
            engine = create_async_engine(
                url, **engine_kwargs(settings, prepare=prepare, cursor_factory=async_cursor)
            )
            cache_schema_translation(engine.sync_engine)
            instrument(engine.sync_engine, settings=settings)
            self.replicas.append(_Replica(name, url, engine))
        # (monotonic time, primary position) each time the position was seen to change.
        self._history: deque[tuple[float, int]] = deque(maxlen=HISTORY)
        self._primary_known = False
        self._sampled_at = -math.inf
        self._refreshing: asyncio.Future[None] | None = None
        self._next = 0
        self._skips: dict[tuple[str, str], Any] = {}
        self._served = (
            READ_SESSIONS.labels(database, "replica"),
            READ_SESSIONS.labels(database, "primary"),
        )

    # sampling ------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Sample the primary's and every replica's position now (one query each, at once)."""
        began = time.monotonic()
        primary, *replays = await asyncio.gather(
            self._sample_primary(),
            *(self._sample(replica) for replica in self.replicas),
            return_exceptions=True,
        )
        if isinstance(primary, BaseException):
            # Without the primary's position no lag can be judged: no replica until it answers.
            self._primary_known = False
            log.debug("could not sample the primary of %s: %s", self.database, primary)
        else:
            assert isinstance(primary, int)
            if not self._history or primary > self._history[-1][1]:
                self._history.append((began, primary))
            self._primary_known = True
        now = time.monotonic()
        for replica, found in zip(self.replicas, replays, strict=True):
            if isinstance(found, BaseException):
                self._mark_down(replica, now, _why(found))
            elif found is None:
                replica.replay = None
                self._set_state(replica, "not_a_replica", "it is not in recovery (promoted?)")
            else:
                replica.replay = found
                replica.down_until = 0.0
        for replica in self.replicas:
            lag = self.lag_ms(replica, now)
            REPLICA_LAG.labels(self.database, replica.name).set(
                math.nan if lag is None else lag / 1000
            )
            if replica.replay is not None:
                if lag is not None and lag <= self.max_lag_ms:
                    self._set_state(replica, "ok", "")
                elif lag is not None:
                    self._set_state(replica, "lagging", f"{lag:.0f} ms behind")
        self._sampled_at = now

    async def _sample_primary(self) -> int:
        async with asyncio.timeout(self._timeout):
            async with self._primary().connect() as conn:
                value = (await conn.execute(_PRIMARY_LSN)).scalar_one()
        position = parse_lsn(value)
        assert position is not None, value
        return position

    async def _sample(self, replica: _Replica) -> int | None:
        now = time.monotonic()
        if replica.down_until > now:
            raise _StillDown(replica.reason)
        async with asyncio.timeout(self._timeout):
            async with replica.engine.connect() as conn:
                in_recovery, replay = (await conn.execute(_REPLAY_LSN)).one()
        if not in_recovery or replay is None:
            return None
        return parse_lsn(replay)

    async def _refresh_if_due(self) -> None:
        if time.monotonic() - self._sampled_at < SAMPLE_INTERVAL:
            return
        loop = asyncio.get_running_loop()
        pending = self._refreshing
        if pending is not None and not pending.done() and pending.get_loop() is loop:
            await asyncio.shield(pending)  # one refresh at a time; the others wait for it
            return
        future: asyncio.Future[None] = loop.create_future()
        self._refreshing = future
        try:
            await self.refresh()
        finally:
            future.set_result(None)

    def lag_ms(self, replica: _Replica, now: float | None = None) -> float | None:
        """How long the primary has been past this replica's replay position, in ms; None
        when unknown (down, or behind since before the first sample)."""
        replay = replica.replay
        if replay is None or not self._primary_known or not self._history:
            return None
        if replay >= self._history[-1][1]:
            return 0.0
        now = time.monotonic() if now is None else now
        for index, (seen, position) in enumerate(self._history):
            if position > replay:
                # Before the first sample we do not know since when: unknown, not "fresh".
                return None if index == 0 else (now - seen) * 1000
        return 0.0  # pragma: no cover  (the last entry is greater, see above)

    # choosing ------------------------------------------------------------------------

    async def connect(self, required: int | None, schema: str | None) -> AsyncConnection | None:
        """A connection to a replica fit to serve a read that must see ``required``
        (None: any within the lag bound), translated to ``schema``; None: use the primary."""
        await self._refresh_if_due()
        now = time.monotonic()
        count = len(self.replicas)
        for step in range(count):
            replica = self.replicas[(self._next + step) % count]
            reason = self._unfit(replica, required, now)
            if reason is not None:
                self._skip(replica, reason)
                continue
            try:
                async with asyncio.timeout(self._timeout):
                    conn = await self._bind(replica, schema).connect()
            except Exception as exc:  # any failure to connect: skip it
                self._mark_down(replica, time.monotonic(), _why(exc))
                self._skip(replica, "down")
                continue
            self._next = (self._next + step + 1) % count
            self._served[0].inc()
            return conn
        return None

    def served_by_primary(self) -> None:
        """Count a read session the primary served (no replica was fit)."""
        self._served[1].inc()

    def _unfit(self, replica: _Replica, required: int | None, now: float) -> str | None:
        if replica.down_until > now or replica.state == "down":
            return "down"
        if replica.replay is None:
            return "down" if replica.state != "not_a_replica" else "not_a_replica"
        lag = self.lag_ms(replica, now)
        if lag is None or lag > self.max_lag_ms:
            if replica.state == "ok":
                self._set_state(replica, "lagging", "past the lag bound")
            return "lagging"
        if required is not None and replica.replay < required:
            return "behind_position"
        return None

    def _bind(self, replica: _Replica, schema: str | None) -> AsyncEngine:
        if schema is None:
            return replica.engine
        bind = replica.binds.get(schema)
        if bind is None:
            bind = replica.engine.execution_options(schema_translate_map={None: schema})
            replica.binds[schema] = bind
            if len(replica.binds) > BIND_CACHE:
                replica.binds.popitem(last=False)
        return bind

    def _skip(self, replica: _Replica, reason: str) -> None:
        counter = self._skips.get((replica.name, reason))
        if counter is None:
            counter = self._skips[(replica.name, reason)] = REPLICA_SKIPS.labels(
                self.database, replica.name, reason
            )
        counter.inc()

    def _mark_down(self, replica: _Replica, now: float, reason: str) -> None:
        replica.replay = None
        if replica.down_until <= now:
            replica.down_until = now + DOWN_BACKOFF
        self._set_state(replica, "down", reason)

    def _set_state(self, replica: _Replica, state: str, reason: str) -> None:
        if state == replica.state:
            return
        previous, replica.state, replica.reason = replica.state, state, reason
        if state == "ok":
            if previous != "unknown":
                log.info("%s replica %s serves reads again", self.database, replica.name)
        else:
            log.warning(
                "%s replica %s is %s (%s): its reads go to the primary",
                self.database,
                replica.name,
                state.replace("_", " "),
                reason,
            )

    # health and lifecycle ------------------------------------------------------------

    async def states(self) -> list[ReplicaState]:
        """Sample now, then each replica's state and lag (for ``/health/ready``)."""
        for replica in self.replicas:
            if replica.state == "down":
                replica.down_until = 0.0  # health asks now, whatever the backoff says
        await self.refresh()
        now = time.monotonic()
        return [
            ReplicaState(replica.name, replica.state, self.lag_ms(replica, now))
            for replica in self.replicas
        ]

    async def dispose(self) -> None:
        for replica in self.replicas:
            replica.binds.clear()
            await replica.engine.dispose()

    def dispose_sync(self, *, close: bool = True) -> None:
        for replica in self.replicas:
            replica.binds.clear()
            replica.engine.sync_engine.dispose(close=close)


class _StillDown(Exception):
    """A replica inside its back-off: not asked again yet."""


def _why(exc: BaseException) -> str:
    """A reason for the log: the error's class and first line, never a password (psycopg's
    messages name host and port only)."""
    if isinstance(exc, _StillDown):
        return str(exc) or "down"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}"[:200]
