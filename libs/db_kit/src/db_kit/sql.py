"""Small SQL helpers the kit uses wherever it writes an identifier into DDL."""

from __future__ import annotations

__all__ = ["quote_identifier"]


def quote_identifier(name: str) -> str:
    """``name`` as a PostgreSQL quoted identifier: always quoted, inner quotes doubled.

    Callers validate names first (tenant slugs, database names); quoting is the second line
    of defence, and keeps a name such as ``Order`` or ``user`` meaning what it says.
    """
    if "\x00" in name:
        raise ValueError("an identifier cannot contain a NUL character")
    return '"' + name.replace('"', '""') + '"'
