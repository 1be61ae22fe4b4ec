"""Translate driver errors into ``db_shared`` errors by SQLSTATE, never by message text."""

from __future__ import annotations

import psycopg
from sqlalchemy import MetaData
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.sql.schema import ColumnCollectionConstraint

from db_shared.errors import (
    CheckViolationError,
    DatabaseError,
    DatabaseUnavailableError,
    DeadlockDetectedError,
    DuplicateEntryError,
    ForeignKeyViolationError,
    IntegrityViolationError,
    InvalidDataError,
    NotNullViolationError,
    SerializationFailureError,
)

_INTEGRITY: dict[str, type[IntegrityViolationError]] = {
    "23505": DuplicateEntryError,
    "23503": ForeignKeyViolationError,
    "23502": NotNullViolationError,
    "23514": CheckViolationError,
}
# Server-side states meaning "this server cannot serve you now", besides class 08.
_UNAVAILABLE = {"57P01", "57P02", "57P03", "53300", "53400"}


class ConstraintColumns:
    """Maps constraint and unique-index names of one ``MetaData`` to their column names."""

    def __init__(self, metadata: MetaData | None) -> None:
        self._columns: dict[str, tuple[str, ...]] = {}
        if metadata is None:
            return
        for table in metadata.tables.values():
            for constraint in table.constraints:
                if isinstance(constraint, ColumnCollectionConstraint) and isinstance(
                    constraint.name, str
                ):
                    self._columns[constraint.name] = tuple(c.name for c in constraint.columns)
            for index in table.indexes:
                if isinstance(index.name, str):
                    self._columns[index.name] = tuple(
                        c.name for c in index.columns if hasattr(c, "name")
                    )

    def get(self, name: str | None) -> tuple[str, ...]:
        return self._columns.get(name or "", ())


def _describe_target(url: URL | None) -> tuple[str | None, int | None]:
    if url is None:
        return None, None
    return url.host, url.port or 5432


def translate(
    exc: BaseException,
    *,
    columns: ConstraintColumns | None = None,
    url: URL | None = None,
) -> DatabaseError | None:
    """The ``db_shared`` error for ``exc``, or None when it is not a database error we map."""
    if isinstance(exc, DatabaseError):
        return exc
    if isinstance(exc, sa_exc.TimeoutError):
        host, port = _describe_target(url)
        return DatabaseUnavailableError(
            f"No pooled connection to {host}:{port} became free in time "
            "(pool exhausted: raise pool_size/max_overflow or find the leak).",
            host=host,
            port=port,
        )
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    if not isinstance(orig, psycopg.Error):
        return None
    state = orig.sqlstate
    if state in _INTEGRITY:
        diag = orig.diag
        cls = _INTEGRITY[state]
        cols: tuple[str, ...] = ()
        if columns is not None:
            cols = columns.get(diag.constraint_name)
        if not cols and diag.column_name:
            cols = (diag.column_name,)
        return cls(table=diag.table_name, constraint=diag.constraint_name, columns=cols)
    if (state is not None and state.startswith("22")) or (
        state is None and isinstance(orig, psycopg.DataError)
    ):
        return InvalidDataError(f"PostgreSQL refused a value: {_first_line(orig)}")
    if state == "40001":
        return SerializationFailureError(
            "The transaction could not be serialized with a concurrent one; retry it."
        )
    if state == "40P01":
        return DeadlockDetectedError(
            "PostgreSQL aborted this transaction to break a deadlock; retry it."
        )
    connection_lost = isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    if (
        (state is None and isinstance(orig, psycopg.OperationalError))
        or connection_lost
        or (state is not None and (state.startswith("08") or state in _UNAVAILABLE))
    ):
        host, port = _describe_target(url)
        target = f"{host}:{port}" if host else "the database server"
        return DatabaseUnavailableError(
            f"Cannot reach PostgreSQL at {target}: {_first_line(orig)}. "
            "Check that the server runs and the URL's host and port are right.",
            host=host,
            port=port,
        )
    return None


def _first_line(orig: BaseException) -> str:
    text = str(orig).strip().splitlines()
    # psycopg messages carry no credentials; keep only the reason line.
    return text[0] if text else type(orig).__name__
