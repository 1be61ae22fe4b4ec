"""Translate driver errors into ``db_shared`` errors by SQLSTATE, never by message text."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum

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
from db_shared.tenancy import TenantFrozenError

# What the freeze trigger of a tenant move raises (db_kit.tenancy.moves): a write refused
# while the tenant's data moves, answered as TenantFrozenError (503, retry shortly).
FROZEN_SQLSTATE = "DBK01"

_INTEGRITY: dict[str, type[IntegrityViolationError]] = {
    "23505": DuplicateEntryError,
    "23503": ForeignKeyViolationError,
    "23502": NotNullViolationError,
    "23514": CheckViolationError,
}
# Server-side states meaning "this server cannot serve you now", besides class 08.
_UNAVAILABLE = {"57P01", "57P02", "57P03", "53300", "53400"}
# What a unit of work meets when its tenant's data is not (or no longer) where it was
# routed: undefined table, invalid schema name, no such database, insufficient privilege.
# The fleet's routing then reads the tenant's placement again (TenantMovedError).
TENANT_GONE_SQLSTATES = frozenset({"42P01", "3F000", "3D000", "42501"})
# read_only_sql_transaction: a write on a server in recovery (see translate).
READ_ONLY_SQLSTATE = "25006"


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


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error (wrapped by SQLAlchemy or not), or None."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    state = getattr(orig, "sqlstate", None)
    return state if isinstance(state, str) else None


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
        return InvalidDataError(f"PostgreSQL refused a value: {first_line(orig)}")
    if state == FROZEN_SQLSTATE:
        return TenantFrozenError()
    if state == "40001":
        return SerializationFailureError(
            "The transaction could not be serialized with a concurrent one; retry it."
        )
    if state == "40P01":
        return DeadlockDetectedError(
            "PostgreSQL aborted this transaction to break a deadlock; retry it."
        )
    if state == READ_ONLY_SQLSTATE:
        # A write reached a server in recovery: a standby a proxy still routes to, or a
        # primary being promoted (Patroni's /primary answers before promotion ends).
        host, port = _describe_target(url)
        where = f"PostgreSQL at {host}:{port}" if host else "The database server"
        return DatabaseUnavailableError(
            f"{where} refused a write as read-only ({first_line(orig)}): a failover is in "
            "progress, or the URL names a standby; retry shortly (writes inside "
            "read_session() are refused the same way).",
            host=host,
            port=port,
        )
    connection_lost = isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    if (
        (state is None and isinstance(orig, psycopg.OperationalError))
        or connection_lost
        or (state is not None and (state.startswith("08") or state in _UNAVAILABLE))
    ):
        host, port = _describe_target(url)
        target = f"{host}:{port}" if host else "the database server"
        kind, reason = classify_connect_error(orig)
        if kind is ConnectFailure.CREDENTIALS:
            user = f" for user {url.username!r}" if url is not None and url.username else ""
            message = (
                f"PostgreSQL at {target} refused the credentials{user}: {reason}. "
                "Fix the user name or password in the database URL."
            )
        elif kind is ConnectFailure.NO_DATABASE:
            name = f" {url.database!r}" if url is not None and url.database else ""
            message = (
                f"PostgreSQL at {target} has no database{name}: {reason}. Create it on the "
                "server (CREATE DATABASE) or fix the database name in the URL."
            )
        else:
            message = (
                f"Cannot reach PostgreSQL at {target}: {first_line(orig)}. "
                "Check that the server runs and the URL's host and port are right."
            )
        return DatabaseUnavailableError(message, host=host, port=port)
    return None


@contextmanager
def translating(
    translator: Callable[[BaseException], DatabaseError | None] | None = None,
    *,
    url: URL | None = None,
) -> Iterator[None]:
    """Raise a driver error from inside the block as its ``db_shared`` error, chained.

    ``translator`` defaults to ``translate`` (with ``url`` for connection errors); a
    Database passes its own (which knows its constraints). Errors it does not map, and
    ``db_shared`` errors themselves, go through unchanged. Works around ``await`` too.
    """
    try:
        yield
    except Exception as exc:
        mapped = translator(exc) if translator is not None else translate(exc, url=url)
        if mapped is None or mapped is exc:
            raise
        raise mapped from exc


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (the driver's, for a SQLAlchemy wrapper); its
    type name when the message is empty. psycopg messages carry no credentials."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


# Connection failures ------------------------------------------------------------------


class ConnectFailure(StrEnum):
    """Why a connection attempt failed, as far as deciding to wait again goes."""

    NOT_READY = "not ready"  # nothing answered yet, or the server is starting: retry
    CREDENTIALS = "credentials"  # the server answered: wrong user or password
    NO_DATABASE = "no database"  # the server answered: that database does not exist
    REFUSED = "refused"  # any other answer (pg_hba, SSL, ...): retrying will not help


_SQLSTATES = {
    "28P01": ConnectFailure.CREDENTIALS,  # invalid_password
    "28000": ConnectFailure.CREDENTIALS,  # invalid_authorization_specification
    "3D000": ConnectFailure.NO_DATABASE,  # invalid_catalog_name
    "57P03": ConnectFailure.NOT_READY,  # cannot_connect_now (starting up, recovery)
    "53300": ConnectFailure.NOT_READY,  # too_many_connections
}
# libpq reports connection failures as text only (psycopg's exception has no SQLSTATE):
# these are the messages of PostgreSQL's and libpq's own sources, lower-cased.
_MESSAGES: tuple[tuple[str, ConnectFailure], ...] = (
    ("password authentication failed", ConnectFailure.CREDENTIALS),
    ("no password supplied", ConnectFailure.CREDENTIALS),
    ("authentication failed for user", ConnectFailure.CREDENTIALS),
    ('role "', ConnectFailure.CREDENTIALS),  # role "x" does not exist
    ("the database system is starting up", ConnectFailure.NOT_READY),
    ("the database system is shutting down", ConnectFailure.NOT_READY),
    ("the database system is in recovery mode", ConnectFailure.NOT_READY),
    ("the database system is not yet accepting connections", ConnectFailure.NOT_READY),
    ("too many clients", ConnectFailure.NOT_READY),
    ("remaining connection slots", ConnectFailure.NOT_READY),
    ("connection refused", ConnectFailure.NOT_READY),
    ("timeout expired", ConnectFailure.NOT_READY),
    ("could not translate host name", ConnectFailure.NOT_READY),
    ("failed to resolve host", ConnectFailure.NOT_READY),
    ("name or service not known", ConnectFailure.NOT_READY),
    ("temporary failure in name resolution", ConnectFailure.NOT_READY),
    ("no route to host", ConnectFailure.NOT_READY),
    ("network is unreachable", ConnectFailure.NOT_READY),
    ("host is unreachable", ConnectFailure.NOT_READY),
    ("server closed the connection unexpectedly", ConnectFailure.NOT_READY),
    ("connection reset by peer", ConnectFailure.NOT_READY),
)
_DATABASE_MISSING = re.compile(r'database ".*" does not exist')
_SERVER_PREFIX = re.compile(r"^(connection failed: )?connection to server (at|on) .*? failed: ")


def connect_failure_reason(message: str) -> str:
    """The reason part of a libpq connection error: no "connection to server at ..." prefix."""
    line = next((ln.strip() for ln in message.strip().splitlines() if ln.strip()), "")
    line = _SERVER_PREFIX.sub("", line)
    line = line.removeprefix("connection failed: ")
    line = re.sub(r"^FATAL:\s+", "", line)
    return line or "no reason given"


def classify_connect_error(exc: BaseException) -> tuple[ConnectFailure, str]:
    """Whether waiting could help with ``exc`` (raised by a connect), and its one-line reason.

    By SQLSTATE when the driver has one; libpq gives none for a failed connection, so
    then by its message. Anything unrecognised counts as refused: better a clear failure
    now than a wait that cannot end well.
    """
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    message = str(orig)
    reason = connect_failure_reason(message)
    state = getattr(orig, "sqlstate", None)
    if isinstance(state, str) and state in _SQLSTATES:
        return _SQLSTATES[state], reason
    lowered = message.lower()
    if _DATABASE_MISSING.search(lowered):
        return ConnectFailure.NO_DATABASE, reason
    for marker, kind in _MESSAGES:
        if marker in lowered:
            return kind, reason
    return ConnectFailure.REFUSED, reason
