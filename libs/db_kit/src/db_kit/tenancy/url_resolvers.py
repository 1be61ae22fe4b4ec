"""Tenant database URLs: settings of a database-per-tenant library and the resolvers that
map a tenant slug to its database URL (``StaticTenantUrlResolver`` for a fixed map such as
US/EU, ``RegistryTenantUrlResolver`` for the library's control registry,
``CallableTenantUrlResolver`` for any other lookup, sync or async, and
``ChainedTenantUrlResolver`` to ask several in turn)."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Protocol, TypeVar, runtime_checkable

from pydantic import AliasChoices, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode
from sqlalchemy.engine import URL, make_url

from db_kit.settings import DatabaseSettings, parse_database_url
from db_kit.tenancy.lookup import served
from db_shared.errors import ConfigurationError, DatabaseError
from db_shared.tenancy import (
    UnknownTenantError,
    validate_tenant_slug,
)

if TYPE_CHECKING:
    from db_kit.tenancy.lookup import RegistryLookup, TenantEntry

T = TypeVar("T")


# Databases a tenant may never name: CREATE/DROP DATABASE on them would be a disaster.
RESERVED_DATABASES = frozenset({"postgres", "template0", "template1"})


# URLs and settings --------------------------------------------------------------------


def tenant_url(value: object, *, tenant: str, source: str, production: bool = False) -> URL:
    """``value`` as a psycopg 3 URL for ``tenant``, or ``ConfigurationError`` naming ``source``
    (the kit's one URL validation, ``parse_database_url``). Never shows the password."""
    if not (isinstance(value, URL) or (isinstance(value, str) and value.strip())):
        raise ConfigurationError(
            f"{source}: tenant {tenant!r} needs a database URL, got {type(value).__name__}."
        )

    def problem(what: str) -> ConfigurationError:
        return ConfigurationError(f"{source}: the URL of tenant {tenant!r} {what}.")

    return parse_database_url(value, problem=problem, production=production)


def _parse_tenant_urls(value: object, *, source: str, production: bool) -> dict[str, URL]:
    """Slug -> normalised URL from a mapping or its JSON text; slugs validated first."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(
                f"{source} is not valid JSON ({exc.msg} at character {exc.pos}); expected an "
                'object such as {"us": "postgresql://...", "eu": "postgresql://..."}.'
            ) from None
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{source} must map tenant slugs to URLs, got {type(value).__name__}."
        )
    return {
        validate_tenant_slug(slug): tenant_url(
            url, tenant=slug, source=source, production=production
        )
        for slug, url in value.items()
    }


TenantUrls = Annotated[dict[str, str], NoDecode]


def tenant_urls_field(variable: str) -> Any:
    """The tenant map of a database-per-tenant lib's settings, read from ``variable``."""
    return Field(default_factory=dict, validation_alias=AliasChoices(variable), repr=False)


class TenantDatabaseSettings(DatabaseSettings):
    """Settings of a database-per-tenant library: the tenants' URLs and the cache's bounds.

    A db lib declares its variable::

        tenant_urls_variable: ClassVar[str] = "BIBIKOS_TENANT_URLS"
        tenant_urls: TenantUrls = tenant_urls_field("BIBIKOS_TENANT_URLS")

    ``tenant_urls`` holds a JSON object ``{"us": "postgresql://...", ...}``; slugs and URLs
    are validated at load time, drivers normalised. The field is never part of ``repr``.
    """

    tenant_urls_variable: ClassVar[str] = "TENANT_URLS"

    tenant_urls: TenantUrls = Field(default_factory=dict, repr=False)
    # At most this many tenants have engines at once (least recently used ones go first).
    tenant_max_engines: int = Field(default=20, ge=1, le=10_000)
    # Server connections all tenant engines of this process may hold together.
    tenant_connection_budget: int = Field(default=100, ge=2, le=1_000_000)

    @field_validator("tenant_urls", mode="before")
    @classmethod
    def _validate_tenant_urls(cls, value: object, info: ValidationInfo) -> dict[str, str]:
        production = str(info.data.get("environment", "")) == "production"
        try:
            urls = _parse_tenant_urls(value, source=cls.tenant_urls_variable, production=production)
        except DatabaseError as exc:  # pydantic reports ValueErrors only
            raise ValueError(str(exc)) from None
        return {slug: url.render_as_string(hide_password=False) for slug, url in urls.items()}

    @model_validator(mode="after")
    def _budget_fits_engines(self) -> TenantDatabaseSettings:
        prefix = str(self.model_config.get("env_prefix", "")).upper()
        needed = self.tenant_max_engines * 2
        if self.tenant_connection_budget < needed:
            raise ValueError(
                f"{prefix}TENANT_CONNECTION_BUDGET={self.tenant_connection_budget} cannot give "
                f"each of the {prefix}TENANT_MAX_ENGINES={self.tenant_max_engines} tenant "
                f"engines its 2 connections (one async, one sync); raise the budget to at "
                f"least {needed} or lower the engine count"
            )
        return self

    def tenant_url_map(self) -> dict[str, URL]:
        """The configured tenants and their URLs (with passwords: do not print them)."""
        return {slug: make_url(url) for slug, url in self.tenant_urls.items()}


# resolvers ----------------------------------------------------------------------------


@runtime_checkable
class TenantUrlResolver(Protocol):
    """Maps a tenant slug to its database URL; ``UnknownTenantError`` when there is none."""

    async def resolve(self, slug: str) -> URL:
        """The tenant's URL, from async code (may await a registry)."""
        ...

    def resolve_sync(self, slug: str) -> URL:
        """The tenant's URL, from sync code (scripts, the CLI, sync sessions)."""
        ...


class StaticTenantUrlResolver:
    """A fixed map of tenants to URLs, such as ``{"us": ..., "eu": ...}`` from settings."""

    def __init__(self, urls: Mapping[str, URL | str], *, source: str = "tenant map") -> None:
        self.source = source
        self._urls = _parse_tenant_urls(urls, source=source, production=False)

    @classmethod
    def from_settings(cls, settings: TenantDatabaseSettings) -> StaticTenantUrlResolver:
        return cls(settings.tenant_url_map(), source=settings.tenant_urls_variable)

    @property
    def tenants(self) -> tuple[str, ...]:
        """The configured slugs, sorted."""
        return tuple(sorted(self._urls))

    def urls(self) -> dict[str, URL]:
        """Slug -> URL, sorted by slug (URLs carry passwords: do not print them)."""
        return {slug: self._urls[slug] for slug in self.tenants}

    def resolve_sync(self, slug: str) -> URL:
        url = self._urls.get(validate_tenant_slug(slug))
        if url is None:
            raise UnknownTenantError(slug)
        return url

    async def resolve(self, slug: str) -> URL:
        return self.resolve_sync(slug)

    def __repr__(self) -> str:
        shown = {s: u.render_as_string(hide_password=True) for s, u in self.urls().items()}
        return f"StaticTenantUrlResolver({shown})"


ResolvedUrl = URL | str | None
ResolverFunction = Callable[[str], ResolvedUrl | Awaitable[ResolvedUrl]]


async def _awaited(value: Awaitable[ResolvedUrl]) -> ResolvedUrl:
    return await value


class CallableTenantUrlResolver:
    """Resolves through ``fn(slug)``: sync or async, returning a URL, a str, or None.

    None means "no such tenant" (``UnknownTenantError``). The slug is validated before
    ``fn`` sees it. ``fn`` runs on the caller's thread: make a registry lookup async
    rather than block the event loop. An async ``fn`` called from sync code runs in a
    fresh event loop when none is running in that thread.
    """

    def __init__(self, fn: ResolverFunction, *, source: str | None = None) -> None:
        self.fn = fn
        self.source = source or f"tenant resolver {getattr(fn, '__qualname__', repr(fn))}"

    def _checked(self, slug: str, value: object) -> URL:
        if value is None:
            raise UnknownTenantError(slug)
        if not isinstance(value, URL | str):
            raise ConfigurationError(
                f"{self.source} returned {type(value).__name__} for tenant {slug!r}; return a "
                "URL, a str, or None for an unknown tenant."
            )
        return tenant_url(value, tenant=slug, source=self.source)

    async def resolve(self, slug: str) -> URL:
        slug = validate_tenant_slug(slug)
        found = self.fn(slug)
        if inspect.isawaitable(found):
            found = await found
        return self._checked(slug, found)

    def resolve_sync(self, slug: str) -> URL:
        slug = validate_tenant_slug(slug)
        found = self.fn(slug)
        if inspect.isawaitable(found):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                found = asyncio.run(_awaited(found))
            else:
                if inspect.iscoroutine(found):
                    found.close()
                raise ConfigurationError(
                    f"{self.source} is async, but a sync session was asked for inside a "
                    "running event loop; use `async with db.session()` there."
                )
        return self._checked(slug, found)


class ChainedTenantUrlResolver:
    """Asks each resolver in turn; the first that knows the tenant answers.

    ``UnknownTenantError`` passes to the next resolver; any other error (a suspended
    tenant, an unreachable registry) stops the chain.
    """

    def __init__(self, *resolvers: TenantUrlResolver) -> None:
        self.resolvers = resolvers

    async def resolve(self, slug: str) -> URL:
        for resolver in self.resolvers:
            try:
                return await resolver.resolve(slug)
            except UnknownTenantError:
                continue
        raise UnknownTenantError(slug)

    def resolve_sync(self, slug: str) -> URL:
        for resolver in self.resolvers:
            try:
                return resolver.resolve_sync(slug)
            except UnknownTenantError:
                continue
        raise UnknownTenantError(slug)

    def __repr__(self) -> str:
        return f"ChainedTenantUrlResolver{self.resolvers!r}"


class RegistryTenantUrlResolver:
    """Tenants of a database-per-tenant registry (``TenantDatabaseRegistryMixin``).

    An ACTIVE row's URL is its server's primary URL (``server_url(row.server)``; a row
    with no server: the control database's URL, ``control_url()``) with the database name
    replaced by the row's ``database_name`` (credentials never live in the table); a
    SUSPENDED row raises ``TenantSuspendedError``; a missing or PROVISIONING one
    ``UnknownTenantError``. Async lookups are cached (``RegistryLookup``).
    """

    def __init__(
        self,
        lookup: RegistryLookup,
        control_url: Callable[[], URL],
        server_url: Callable[[str], URL] | None = None,
    ) -> None:
        self.lookup = lookup
        self.control_url = control_url
        self.server_url = server_url

    async def resolve(self, slug: str) -> URL:
        slug = validate_tenant_slug(slug)
        return self._url(slug, await self.lookup.tenant(slug))

    def resolve_sync(self, slug: str) -> URL:
        slug = validate_tenant_slug(slug)
        return self._url(slug, self.lookup.tenant_sync(slug))

    def _url(self, slug: str, entry: TenantEntry | None) -> URL:
        if entry is None or not served(slug, entry):
            raise UnknownTenantError(slug)
        if entry.location in RESERVED_DATABASES:
            raise ConfigurationError(
                f"The registry names database {entry.location!r} for tenant {slug!r}; a tenant "
                "may never use a server's system database."
            )
        if entry.server is not None and self.server_url is not None:
            return self.server_url(entry.server).set(database=entry.location)
        return self.control_url().set(database=entry.location)

    def __repr__(self) -> str:
        return f"RegistryTenantUrlResolver({self.lookup!r})"
