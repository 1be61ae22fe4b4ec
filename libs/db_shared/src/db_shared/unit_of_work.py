"""Run a unit of work, retrying it when PostgreSQL reports a lost race."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from db_shared.errors import RetryableError
from db_shared.protocols import Database

T = TypeVar("T")


async def transact(
    db: Database,
    work: Callable[[AsyncSession], Awaitable[T]],
    *,
    attempts: int = 3,
    backoff: float = 0.02,
) -> T:
    """Run ``work`` in one transaction; rerun it whole on serialization failure or deadlock.

    After ``attempts`` tries the last ``RetryableError`` propagates (apps answer 409).
    """
    for attempt in range(1, attempts + 1):
        try:
            async with db.session() as session:
                return await work(session)
        except RetryableError:
            if attempt == attempts:
                raise
            await asyncio.sleep(backoff * attempt * (1 + random.random()))  # noqa: S311
    raise AssertionError("unreachable")  # pragma: no cover
