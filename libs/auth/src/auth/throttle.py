"""Login throttling: failed logins counted per account and per client address, in the database.

The counts live in ``auth_login_failures`` (``auth.tables.LoginFailureTable``), so every
worker process and every server behind a load balancer sees the same numbers; a process's
memory would let each worker grant its own quota. Each login attempt first takes a slot in a
fixed window (one ``INSERT ... ON CONFLICT DO UPDATE`` per counter, atomic under concurrency)
and only then checks the password, so parallel guesses cannot all slip in before the first
failure is recorded. An attempt past the limit is refused before the password is checked:
a correct password is refused too, and the answer does not say whether it was correct.
A successful login deletes the account's counter and gives back its slot at the address.

Settings (environment, ``AUTH_LOGIN_`` prefix): ``MAX_FAILURES_PER_ACCOUNT`` (5),
``MAX_FAILURES_PER_ADDRESS`` (20), ``FAILURE_WINDOW_SECONDS`` (900); a limit of 0 turns that
counter off. The address is the ASGI client host: behind a proxy that is the proxy's
address unless the server is told to trust its forwarded headers (uvicorn's
``--proxy-headers --forwarded-allow-ips``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import case, delete, func, literal, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from auth.tables import LoginFailureTable
from db_shared.errors import RateLimitedError

ACCOUNT = "account"
ADDRESS = "address"
# Dead counters each login attempt deletes (see LoginThrottle._sweep).
SWEEP_BATCH = 16


class LoginThrottleSettings(BaseSettings):
    """How many failed logins a window admits, per account and per client address."""

    model_config = SettingsConfigDict(env_prefix="AUTH_LOGIN_", extra="ignore")

    max_failures_per_account: int = Field(default=5, ge=0)
    max_failures_per_address: int = Field(default=20, ge=0)
    failure_window_seconds: int = Field(default=900, ge=1)


@dataclass(frozen=True)
class Slot:
    """One counter's state after an attempt took (or was refused) its slot."""

    kind: str
    failures: int
    limit: int
    retry_after: int

    @property
    def exceeded(self) -> bool:
        return self.failures > self.limit


class LoginThrottle:
    """The counters of one database (``model``: the db lib's ``LoginFailureTable`` class)."""

    def __init__(self, model: type[LoginFailureTable], settings: LoginThrottleSettings) -> None:
        self.model = model
        self.settings = settings
        self.window = timedelta(seconds=settings.failure_window_seconds)

    def _counters(self, email: str, address: str | None) -> list[tuple[str, str, int]]:
        s = self.settings
        counters = [(ACCOUNT, email, s.max_failures_per_account)]
        if address:
            counters.append((ADDRESS, address, s.max_failures_per_address))
        return [c for c in counters if c[2] > 0]

    async def take(
        self, s: AsyncSession, email: str, address: str | None
    ) -> RateLimitedError | None:
        """Count this attempt against the account and the address; the refusal past a limit.

        Counts stop at limit + 1, so a refused flood writes nothing new. The refusal
        (``too_many_login_attempts``) carries the seconds until the longest of the exceeded
        windows ends; it is returned, not raised, so the caller commits the count first.
        """
        slots = [await self._take(s, kind, key, limit) for kind, key, limit in
                 self._counters(email, address)]  # fmt: skip
        if slots:
            await self._sweep(s)
        exceeded = [slot for slot in slots if slot.exceeded]
        if not exceeded:
            return None
        return RateLimitedError(
            "too_many_login_attempts",
            "Too many failed logins; try again later.",
            retry_after=max(slot.retry_after for slot in exceeded),
        )

    async def _take(self, s: AsyncSession, kind: str, key: str, limit: int) -> Slot:
        M = self.model
        expired = M.window_started_at <= func.now() - literal(self.window)
        stmt = (
            insert(M)
            .values(kind=kind, key=key, window_started_at=func.now(), failures=1)
            .on_conflict_do_update(
                index_elements=["kind", "key"],
                set_={
                    "window_started_at": case((expired, func.now()), else_=M.window_started_at),
                    "failures": case((expired, 1), else_=func.least(M.failures + 1, limit + 1)),
                },
            )
            .returning(M.failures, M.window_started_at, func.now())
        )
        failures, started, now = (await s.execute(stmt)).one()
        return Slot(kind, failures, limit, self._seconds_left(started, now))

    async def _sweep(self, s: AsyncSession) -> None:
        """Delete up to ``SWEEP_BATCH`` counters whose window has ended.

        Every attempt adds at most two rows and removes up to ``SWEEP_BATCH`` dead ones, so
        the table holds the live windows and little more, even when a flood of made-up
        e-mails writes a new row each time; no purge job is needed. The index on
        ``window_started_at`` finds them; rows another login holds are skipped, never
        waited for.
        """
        M = self.model
        dead = (
            select(M.kind, M.key)
            .where(M.window_started_at <= func.now() - literal(self.window))
            .order_by(M.window_started_at)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        )
        await s.execute(delete(M).where(tuple_(M.kind, M.key).in_(dead)))

    def _seconds_left(self, started: datetime, now: datetime) -> int:
        return max(1, math.ceil((started + self.window - now).total_seconds()))

    async def succeeded(self, s: AsyncSession, email: str, address: str | None) -> None:
        """A correct login: clear the account's counter, give back the address slot."""
        M = self.model
        await s.execute(delete(M).where(M.kind == ACCOUNT, M.key == email))
        if address:
            await s.execute(
                update(M)
                .where(M.kind == ADDRESS, M.key == address)
                .values(failures=func.greatest(M.failures - 1, 0))
            )

    async def purge(self, s: AsyncSession) -> int:
        """Delete every counter whose window has ended; returns how many. Logins sweep a few
        each time already (``_sweep``): this is for a maintenance script."""
        M = self.model
        result: Any = await s.execute(
            delete(M).where(M.window_started_at <= func.now() - literal(self.window))
        )
        return int(result.rowcount)


__all__ = ["ACCOUNT", "ADDRESS", "LoginThrottle", "LoginThrottleSettings"]
