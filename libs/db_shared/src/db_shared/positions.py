"""Read-your-writes: the WAL position the current request (or job) must see.

After a unit of work that wrote, the database records the primary's WAL position
(``pg_current_wal_lsn()``) here; a later ``read_session()`` in the same context uses a
replica only once it has replayed that far, else the primary. An HTTP middleware seeds it
from a request header and returns it in the response, so a client's next request reads
what its previous one wrote.

The context variable holds a small mutable holder, not the position itself: a write made
where the context was copied (a thread of Starlette's threadpool, a task) still reaches the
request's holder, and so its response header.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "POSITION_MAX_LENGTH",
    "WalPositions",
    "format_lsn",
    "note_write",
    "parse_lsn",
    "position_context",
    "required_position",
]

# "FFFFFFFF/FFFFFFFF" is 17 characters; anything longer is not a position.
POSITION_MAX_LENGTH = 17
_LSN = re.compile(r"[0-9A-F]{1,8}/[0-9A-F]{1,8}")


def parse_lsn(value: str | None) -> int | None:
    """``'0/3000148'`` as a byte offset; None for anything else (garbage is ignored)."""
    if not value or len(value) > POSITION_MAX_LENGTH:
        return None
    value = value.strip().upper()
    if _LSN.fullmatch(value) is None:
        return None
    high, low = value.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def format_lsn(position: int) -> str:
    """A byte offset as PostgreSQL writes a WAL position (``'0/3000148'``)."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


class WalPositions:
    """What one request or job must see: the furthest position it carried or wrote."""

    __slots__ = ("required", "wrote")

    def __init__(self, required: int | None = None) -> None:
        self.required = required
        self.wrote = False

    def note(self, position: int) -> None:
        if self.required is None or position > self.required:
            self.required = position
        self.wrote = True


_positions: contextvars.ContextVar[WalPositions | None] = contextvars.ContextVar(
    "db_wal_positions", default=None
)


def required_position() -> int | None:
    """The WAL position reads in this context must have seen; None: any replica within its
    lag bound will do."""
    holder = _positions.get()
    return None if holder is None else holder.required


def note_write(position: int) -> None:
    """Record that this context wrote up to ``position`` (the database calls this)."""
    holder = _positions.get()
    if holder is None:
        holder = WalPositions()
        _positions.set(holder)
    holder.note(position)


@contextmanager
def position_context(required: int | None = None) -> Iterator[WalPositions]:
    """A fresh holder for one request or job, seeded with a position it must see."""
    holder = WalPositions(required)
    token = _positions.set(holder)
    try:
        yield holder
    finally:
        _positions.reset(token)
