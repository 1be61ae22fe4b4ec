"""One result type for every tenant a migration command touched, schema or database."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from db_shared.tenancy import UnknownTenantError, validate_tenant_slug

__all__ = ["Outcome", "TenantReport", "UnknownTenantsError", "select_tenants"]


class UnknownTenantsError(UnknownTenantError):
    """``--tenant`` named tenants that are not configured; nothing was migrated."""

    def __init__(self, unknown: Sequence[str], where: str) -> None:
        super().__init__(unknown[0] if len(unknown) == 1 else tuple(unknown))
        self.unknown = tuple(unknown)
        self.args = (
            f"unknown tenant{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"(not in {where}); nothing was migrated.",
        )

    def __str__(self) -> str:
        return str(self.args[0])


def select_tenants(known: Iterable[str], wanted: Sequence[str], where: str) -> list[str]:
    """``wanted`` validated (each slug, before any SQL), in order, without repeats; raises
    ``UnknownTenantsError`` naming every one not in ``known``."""
    slugs = list(dict.fromkeys(validate_tenant_slug(s) for s in wanted))
    present = set(known)
    unknown = [s for s in slugs if s not in present]
    if unknown:
        raise UnknownTenantsError(unknown, where)
    return slugs


class Outcome(StrEnum):
    """What happened to (or where stands) one tenant."""

    CREATED = "created"  # its database was created and migrated
    MIGRATED = "migrated"
    UP_TO_DATE = "up to date"
    FAILED = "failed"  # its migration raised; rolled back
    PENDING = "pending"  # revisions to apply (status, list)
    MISSING = "missing"  # its database does not exist (list)
    UNREACHABLE = "unreachable"  # its server did not answer (list)


@dataclass(frozen=True)
class TenantReport:
    """One tenant's line in a report.

    ``where`` is the tenant's schema (schema-per-tenant) or ``host:port/database``
    (database-per-tenant); ``before``/``after`` its revision around the command (equal for
    a status). ``pid`` is the process that migrated it (0: nothing was done).
    """

    slug: str
    where: str
    before: str | None
    after: str | None
    status: Outcome
    error: str | None = None
    seconds: float = 0.0
    pid: int = 0

    @property
    def failed(self) -> bool:
        return self.status is Outcome.FAILED

    @property
    def schema(self) -> str:
        """The tenant's schema (schema-per-tenant reports)."""
        return self.where

    @property
    def database(self) -> str:
        """``host:port/database`` of the tenant's database (database-per-tenant reports)."""
        return self.where

    @property
    def revision(self) -> str | None:
        """The revision the tenant is at after the command."""
        return self.after

    @property
    def state(self) -> Outcome:
        return self.status
