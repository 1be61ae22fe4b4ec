"""The error hierarchy every database library raises and every app maps to HTTP.

Drivers never leak past a db lib: db_kit translates psycopg errors by SQLSTATE into
these types and always chains the original (``raise ... from exc``).
"""

from __future__ import annotations


class DatabaseError(Exception):
    """Base class of every error a db lib raises on purpose."""


class ConfigurationError(DatabaseError):
    """Settings are missing or wrong; the message names the variable and the fix."""


class UnboundTokenError(ConfigurationError, LookupError):
    """A feature asked for a token (such as ``DATABASE``) that the app never bound."""

    def __init__(self, token: str, *, hint: str) -> None:
        self.token = token
        super().__init__(f"No service is bound to the {token} token. {hint}")


class NotFoundError(DatabaseError):
    """A row the caller asked for by key does not exist."""

    def __init__(self, entity: str, key: object) -> None:
        self.entity = entity
        self.key = key
        super().__init__(f"{entity} {key!r} was not found")


class DatabaseUnavailableError(DatabaseError):
    """The server cannot be reached or refuses connections; retry later."""

    def __init__(self, message: str, *, host: str | None = None, port: int | None = None) -> None:
        self.host = host
        self.port = port
        super().__init__(message)


class IntegrityViolationError(DatabaseError):
    """A constraint refused the write. Nothing was committed."""

    kind = "integrity"

    def __init__(
        self,
        *,
        table: str | None = None,
        constraint: str | None = None,
        columns: tuple[str, ...] = (),
        message: str | None = None,
    ) -> None:
        self.table = table
        self.constraint = constraint
        self.columns = columns
        where = f" on {table}" if table else ""
        cols = f" ({', '.join(columns)})" if columns else ""
        named = f" [{constraint}]" if constraint else ""
        super().__init__(message or f"{self.kind} violation{where}{cols}{named}")


class DuplicateEntryError(IntegrityViolationError):
    """A unique constraint refused the write; ``columns`` names the duplicated fields."""

    kind = "duplicate entry"


class ForeignKeyViolationError(IntegrityViolationError):
    """A referenced row does not exist, or a referencing row still does."""

    kind = "foreign key"


class NotNullViolationError(IntegrityViolationError):
    """A required column was left empty."""

    kind = "not-null"


class CheckViolationError(IntegrityViolationError):
    """A CHECK constraint refused the value."""

    kind = "check"


class InvalidDataError(DatabaseError):
    """PostgreSQL refused a value (SQLSTATE class 22: out of range, bad encoding, NUL byte)."""


class RetryableError(DatabaseError):
    """The transaction lost a race; running the whole unit of work again may succeed."""


class SerializationFailureError(RetryableError):
    """SQLSTATE 40001: concurrent update under REPEATABLE READ / SERIALIZABLE."""


class DeadlockDetectedError(RetryableError):
    """SQLSTATE 40P01: PostgreSQL broke a deadlock by aborting this transaction."""


# --- domain refusals ----------------------------------------------------------------------
# Feature services raise these when a use case refuses a request. They carry what the caller
# needs to know (a stable ``code``, a human ``detail``, the ``fields`` at fault) and no
# transport status: the web layer (api_kit) maps each kind to HTTP in one table.


class DomainError(Exception):
    """A use case refused the request; ``code`` is stable, ``detail`` is for people."""

    def __init__(self, code: str, detail: str, *, fields: tuple[str, ...] = ()) -> None:
        self.code = code
        self.detail = detail
        self.fields = fields
        super().__init__(detail)


class ResourceNotFoundError(DomainError):
    """What the request names does not exist (or is not the caller's to see)."""


class ConflictError(DomainError):
    """The request contradicts the current state: already done, full, ended, started."""


class ForbiddenError(DomainError):
    """The caller is known but may not do this (a missing role or membership)."""


class UnauthenticatedError(DomainError):
    """The caller could not be identified: no, wrong or expired credentials or signature."""


class InvalidInputError(DomainError):
    """The input is well-formed but refused by a rule of the use case."""


class RateLimitedError(DomainError):
    """Too many attempts: refused until ``retry_after`` seconds have passed (HTTP 429)."""

    def __init__(
        self, code: str, detail: str, *, retry_after: int, fields: tuple[str, ...] = ()
    ) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(code, detail, fields=fields)
