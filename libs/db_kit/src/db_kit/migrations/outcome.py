"""One result type for every tenant a migration command touched, schema or database, and
the placement both tenancy modes share (which server a tenant lives on, where a new one goes).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.engine import URL

from db_kit.errors import first_line
from db_kit.settings import DEFAULT_SERVER as SETTINGS_DEFAULT_SERVER
from db_kit.settings import DatabaseSettings, PlacementPolicy
from db_shared.errors import ConfigurationError
from db_shared.tenancy import UnknownTenantError, validate_tenant_slug

__all__ = [
    "ALEMBIC_LOCK",
    "Outcome",
    "Placement",
    "TenantReport",
    "UnknownTenantsError",
    "select_tenants",
]


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


# Alembic's ``context``/``op`` proxies are module-level: one upgrade at a time per process.
# Fleet-wide runs handle servers in threads; their upgrades in this process take turns.
ALEMBIC_LOCK = threading.Lock()


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
    # The server holding it (a fleet's server name; "" when not known).
    server: str = ""

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


# placement: which server a tenant lives on ----------------------------------------------


@dataclass(frozen=True)
class Placement:
    """The servers a library's tenants may live on, and where a new one goes.

    ``home`` holds the tenant registry (its URL is the one the migrator was given);
    ``primaries`` maps every server name to its primary URL. A registry row whose
    ``server`` is NULL lives on ``home``. ``configured``: ``<PREFIX>SERVERS`` is set (the
    registry then records every tenant's server by name; unset, a tenant of the only
    server is recorded as NULL, exactly as before fleets).
    """

    home: str
    primaries: Mapping[str, URL]
    variable: str
    configured: bool
    policy: PlacementPolicy = PlacementPolicy.FEWEST

    @classmethod
    def of(cls, settings: DatabaseSettings, home_url: URL) -> Placement:
        """The fleet of ``settings``, its home server's primary being ``home_url``."""
        variable = settings.servers_variable
        if not (settings.servers and settings.servers.strip()):
            return cls(
                SETTINGS_DEFAULT_SERVER, {SETTINGS_DEFAULT_SERVER: home_url}, variable, False
            )
        fleet = settings.fleet()
        found = settings.server_of(home_url)
        home = found.name if found is not None else settings.home_server()
        if home is None:  # pragma: no cover - fleet() refuses a fleet without a home
            home = next(iter(fleet))
        primaries = {name: server.primary for name, server in fleet.items()}
        primaries[home] = home_url
        return cls(home, primaries, variable, True, settings.placement)

    @property
    def placement_variable(self) -> str:
        return self.variable.removesuffix("SERVERS") + "PLACEMENT"

    def name(self, stored: str | None) -> str:
        """The server of a registry row (NULL: the home server)."""
        return stored or self.home

    def stored(self, server: str) -> str | None:
        """What the registry's ``server`` column records for a tenant placed on ``server``."""
        return server if self.configured or server != self.home else None

    def unknown(self, server: str) -> str:
        """Why ``server`` cannot be used (no URL, no password)."""
        known = ", ".join(sorted(self.primaries))
        if not self.configured:
            return (
                f"server {server!r} is not a server of this database: {self.variable} is not "
                f"set, so the only server is {self.home!r} (the main URL's)."
            )
        return f"server {server!r} is not in {self.variable} (known servers: {known})."

    def url(self, server: str) -> URL:
        """The primary URL of ``server`` (``ConfigurationError`` for a name not configured)."""
        try:
            return self.primaries[server]
        except KeyError:
            raise ConfigurationError(self.unknown(server)) from None

    def choose(self, requested: str | None, counts: Callable[[], Mapping[str, int]]) -> str:
        """Where a new tenant goes: ``requested`` (checked), the only server, or by policy:
        ``fewest`` is the server with the fewest registered tenants (``counts()``, read only
        when needed; ties: the home server, then by name); ``explicit`` refuses to guess."""
        if requested is not None:
            self.url(requested)
            return requested
        if len(self.primaries) == 1:
            return self.home
        if self.policy is PlacementPolicy.EXPLICIT:
            raise ConfigurationError(
                f"{self.variable} lists {len(self.primaries)} servers "
                f"({', '.join(sorted(self.primaries))}) and {self.placement_variable} is "
                "explicit: name the new tenant's server with --server."
            )
        tenants = counts()
        return min(self.primaries, key=lambda s: (tenants.get(s, 0), s != self.home, s))

    def count_tenants(self, conn: Connection, model: Any) -> dict[str, int]:
        """Registered tenants per server (one query on the registry)."""
        server = func.coalesce(model.server, self.home)
        rows = conn.execute(select(server, func.count()).group_by(server)).all()
        return {name: int(n) for name, n in rows}

    def unreachable(self, server: str, exc: BaseException) -> str:
        """A connection failure's reason naming the server (never a password)."""
        reason = first_line(exc)
        password = self.primaries.get(server, URL.create("x")).password
        if password:
            reason = reason.replace(str(password), "***")
        return f"server {server} unreachable: {reason}"[:1000]
