"""Validated request types every module reuses: what PostgreSQL and Python both round-trip.

A value the database stores but the app cannot load back (a ``timestamptz`` in year 10000
UTC) would make every later read of that row fail, so such values are refused with 422 when
written. Numbers in JSON bodies are strict: ``true``, ``"1"`` and ``1.0`` are not ``1``.
Query and path parameters arrive as strings, so they stay lax (FastAPI parses them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic import AwareDatetime as _PydanticAwareDatetime

INT4_MIN, INT4_MAX = -(2**31), 2**31 - 1  # PostgreSQL integer
INT8_MIN, INT8_MAX = -(2**63), 2**63 - 1  # PostgreSQL bigint
MAX_ID = INT8_MAX

# Python's datetime holds years 1..9999; PostgreSQL's timestamptz far more. psycopg loads a
# timestamptz in the session's time zone (offsets below 16 h), so one day of margin at each
# end keeps every accepted value loadable whatever that zone is.
MIN_DATETIME = datetime(1, 1, 2, tzinfo=UTC)
MAX_DATETIME = datetime(9999, 12, 30, 23, 59, 59, 999_999, tzinfo=UTC)


def _bounded(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+14:00 is year 0 in UTC
        utc = None
    if utc is None or not MIN_DATETIME <= utc <= MAX_DATETIME:
        raise ValueError(
            f"must lie between {MIN_DATETIME.isoformat()} and {MAX_DATETIME.isoformat()} in UTC"
        )
    return utc


# A timezone-aware datetime (naive ones are refused: no guessing the zone), normalised to
# UTC and bounded to what both PostgreSQL timestamptz and Python datetime round-trip.
AwareDatetime = Annotated[_PydanticAwareDatetime, AfterValidator(_bounded)]

# Strict integers of a JSON body: a JSON integer only, within the column type.
StrictInt4 = Annotated[int, Field(strict=True, ge=INT4_MIN, le=INT4_MAX)]
StrictInt8 = Annotated[int, Field(strict=True, ge=INT8_MIN, le=INT8_MAX)]
# A positive bigint id in a body (``{"price_id": 1}``).
StrictId = Annotated[int, Field(strict=True, ge=1, le=MAX_ID)]

__all__ = [
    "INT4_MAX",
    "INT4_MIN",
    "INT8_MAX",
    "INT8_MIN",
    "MAX_DATETIME",
    "MAX_ID",
    "MIN_DATETIME",
    "AwareDatetime",
    "StrictId",
    "StrictInt4",
    "StrictInt8",
]
