"""Resolve the tenant of each request and make it the current tenant while it runs.

``TenantMiddleware`` is a pure ASGI middleware: it asks a resolver (host map, registry
domains, subdomain, header, custom function, or a chain of them) for the request's
tenant, answers 404 ``unknown_tenant`` itself when there is none, and otherwise runs the
app inside ``db_shared.tenant_context``. Unknown and malformed tenants get the same
answer, so the response does not reveal which slugs exist or which rule a probe broke; a
suspended tenant gets 403 ``tenant_suspended``.
"""

from __future__ import annotations

import fnmatch
import inspect
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends
from fastapi.requests import HTTPConnection
from fastapi.responses import JSONResponse
from starlette.middleware import Middleware

from api_kit.errors import problem, response_for
from db_shared.errors import DatabaseError, DomainError, ResourceNotFoundError
from db_shared.protocols import TenantDomains
from db_shared.tenancy import (
    InvalidTenantError,
    Tenant,
    TenantLike,
    TenantSuspendedError,
    UnknownTenantError,
    as_tenant,
    current_tenant_or_none,
    tenant_context,
    validate_tenant_slug,
)

log = logging.getLogger(__name__)

# The ASGI types as starlette spells them (api_kit declares fastapi, not starlette).
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNKNOWN_TENANT_CODE = "unknown_tenant"
UNKNOWN_TENANT_DETAIL = "No tenant is served at this address."
DEFAULT_EXEMPT_PATHS = ("/health", "/metrics", "/docs", "/openapi.json", "/redoc")
# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
_HOST_NAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*")

Resolved = TenantLike | None
Resolution = Resolved | Awaitable[Resolved]


class TenantResolver(Protocol):
    """Finds the tenant of a request; ``None`` when this resolver cannot tell."""

    def resolve(self, scope: Scope) -> Resolution:
        """A tenant (or slug), ``None``, or an awaitable of either."""
        ...


async def resolve_tenant(resolver: TenantResolver, scope: Scope) -> Tenant | None:
    """Run ``resolver`` (sync or async) and validate what it found."""
    found = resolver.resolve(scope)
    if inspect.isawaitable(found):
        found = await found
    if found is None:
        return None
    tenant = as_tenant(found)
    # A Tenant validates its slug when made; check again in case one was forged.
    validate_tenant_slug(tenant.slug)
    return tenant


def _header_values(scope: Scope, name: bytes) -> list[bytes]:
    return [value for key, value in scope.get("headers", ()) if key.lower() == name]


def request_host(scope: Scope) -> str | None:
    """The lower-cased Host of a request without port or trailing dot (IPv6 compressed).

    ``None`` when the request has no Host, several, or one that is not a host name or
    an IP address, so garbage never reaches a pattern or a slug.
    """
    values = _header_values(scope, b"host")
    if len(values) != 1:
        return None
    raw = values[0].decode("latin-1").strip().lower()
    if raw.startswith("["):
        literal, closed, rest = raw[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            return None
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            return None
        host, port = f"[{address.compressed}]", rest[1:]
    else:
        host, _, port = raw.partition(":")
        host = host.removesuffix(".")
        if len(host) > 253 or not _HOST_NAME.fullmatch(host):
            return None
    if port and not (port.isascii() and port.isdigit()):
        return None
    return host


class HostMapResolver:
    """Tenants by host pattern: each tenant (a US and an EU region, say) lists its hosts.

    ``HostMapResolver({"us": ["app.example.com", "*.us.example.com"], "eu": [...]},
    default="us")``. Patterns are ``fnmatch`` globs on the lower-cased host without port,
    tried in order; ``*`` and ``?`` are the only wildcards (``[`` is literal, so an IPv6
    host such as ``[::1]`` can be listed). ``default`` answers a well-formed host no
    pattern matches; ``None`` leaves it unknown. A missing or malformed Host is always
    unknown.
    """

    def __init__(self, hosts: Mapping[str, Iterable[str]], *, default: str | None = None):
        self.patterns: list[tuple[str, Tenant]] = []
        seen: dict[str, str] = {}
        for slug, patterns in hosts.items():
            tenant = Tenant(validate_tenant_slug(slug))
            if isinstance(patterns, str):
                raise TypeError(f"the hosts of {slug!r} must be a list of patterns")
            for pattern in patterns:
                lowered = pattern.lower()
                if lowered in seen:
                    raise ValueError(
                        f"host {pattern!r} is listed for {seen[lowered]!r} and {slug!r}"
                    )
                seen[lowered] = slug
                self.patterns.append((lowered.replace("[", "[[]"), tenant))
        self.default = None if default is None else Tenant(validate_tenant_slug(default))

    def resolve(self, scope: Scope) -> Tenant | None:
        host = request_host(scope)
        if host is None:
            return None
        for pattern, tenant in self.patterns:
            if fnmatch.fnmatchcase(host, pattern):
                return tenant
        return self.default


class RegistryDomainResolver:
    """Tenants by the host names a registry lists (``tenant_domains``), e.g. a custom
    domain each customer brings; a host no row names -> ``None``.

    ``directory`` answers from its cache (``db_kit.tenancy.lookup``), which forgets at once
    when the registry changes, so a domain added or removed is served or refused without
    a restart.
    """

    def __init__(self, directory: TenantDomains) -> None:
        self.directory = directory

    async def resolve(self, scope: Scope) -> Tenant | None:
        host = request_host(scope)
        if host is None:
            return None
        slug = await self.directory.tenant_for_host(host)
        return None if slug is None else Tenant(slug)


class SubdomainResolver:
    """``acme.example.com`` -> tenant ``acme``; the apex and deeper names -> ``None``.

    Host names cannot hold ``_``, so only slugs without one are reachable this way; a
    label that is no valid slug (``acme-corp``) raises ``InvalidTenantError``.
    """

    def __init__(self, base_domain: str, *, exclude: Iterable[str] = ("www",)) -> None:
        self.suffix = "." + base_domain.lower().strip(".")
        self.exclude = frozenset(label.lower() for label in exclude)

    def resolve(self, scope: Scope) -> Tenant | None:
        host = request_host(scope)
        if host is None or not host.endswith(self.suffix):
            return None
        label = host.removesuffix(self.suffix)
        if not label or "." in label or label in self.exclude:
            return None
        return Tenant(label)


class HeaderResolver:
    """The slug a trusted proxy or client sends in a header (``X-Tenant`` by default).

    Absent -> ``None``; sent more than once -> ``InvalidTenantError`` (ambiguous: a
    refusal, so no later resolver or default picks a tenant instead); any other value is
    validated as a slug.
    """

    def __init__(self, name: str = "X-Tenant") -> None:
        self.name = name.lower().encode("latin-1")

    def resolve(self, scope: Scope) -> Tenant | None:
        values = _header_values(scope, self.name)
        if not values:
            return None
        if len(values) > 1:
            raise InvalidTenantError(
                values, f"the {self.name.decode()} header was sent more than once"
            )
        return Tenant(values[0].decode("latin-1"))


class DefaultResolver:
    """The tenant of every request with a well-formed Host; last in a ``FirstMatch`` chain.

    A missing or malformed Host stays unknown, as with ``HostMapResolver(default=...)``.
    """

    def __init__(self, slug: str) -> None:
        self.tenant = Tenant(validate_tenant_slug(slug))

    def resolve(self, scope: Scope) -> Tenant | None:
        return self.tenant if request_host(scope) is not None else None


class CallableResolver:
    """A custom function of the request (a Starlette ``HTTPConnection``), sync or async.

    It returns a ``Tenant``, a slug or ``None``; e.g. look the host up in a registry.
    """

    def __init__(self, fn: Callable[[HTTPConnection], Resolution]) -> None:
        self.fn = fn

    def resolve(self, scope: Scope) -> Resolution:
        return self.fn(HTTPConnection(scope))


class FirstMatch:
    """Ask each resolver in turn; the first tenant found wins.

    A malformed slug stops the chain with ``InvalidTenantError``: it is a refusal, not a
    miss.
    """

    def __init__(self, *resolvers: TenantResolver) -> None:
        self.resolvers = resolvers

    async def resolve(self, scope: Scope) -> Tenant | None:
        for resolver in self.resolvers:
            tenant = await resolve_tenant(resolver, scope)
            if tenant is not None:
                return tenant
        return None


KnownCheck = Callable[[Tenant], bool | Awaitable[bool]]


class TenantMiddleware:
    """Sets the current tenant for each HTTP and WebSocket request, resets it after.

    Paths in ``exempt_paths`` (and below them) run with no tenant. A request whose tenant
    cannot be resolved, is malformed, or fails ``known`` gets 404 ``unknown_tenant``; one
    whose tenant is suspended (``known`` raised ``TenantSuspendedError``) 403
    ``tenant_suspended`` (a WebSocket is closed with 1008 for either). Other
    ``db_shared`` errors from a resolver or ``known`` are answered like route errors (e.g.
    503 when the registry database is down; a WebSocket is closed with 1011).
    """

    def __init__(
        self,
        app: ASGIApp,
        resolver: TenantResolver,
        *,
        exempt_paths: Sequence[str] = DEFAULT_EXEMPT_PATHS,
        known: KnownCheck | None = None,
    ) -> None:
        self.app = app
        self.resolver = resolver
        self.exempt_paths = tuple(path.rstrip("/") for path in exempt_paths)
        self.known = known

    def is_exempt(self, path: str) -> bool:
        return any(path == exempt or path.startswith(exempt + "/") for exempt in self.exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.is_exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            tenant = await self._tenant_of(scope)
        except (InvalidTenantError, UnknownTenantError) as exc:
            log.info("tenant refused for %s: %s", scope["path"], exc)
            tenant = None
        except TenantSuspendedError as exc:
            log.info("tenant %r is suspended: refused %s", exc.slug, scope["path"])
            await self._refuse(scope, receive, send, response_for(exc), policy=True)
            return
        except (DatabaseError, DomainError) as exc:
            await self._refuse(scope, receive, send, response_for(exc))
            return
        if tenant is None:
            await self._refuse(scope, receive, send, None)
            return
        async with tenant_context(tenant):
            await self.app(scope, receive, send)

    async def _tenant_of(self, scope: Scope) -> Tenant | None:
        tenant = await resolve_tenant(self.resolver, scope)
        if tenant is None or self.known is None:
            return tenant
        known = self.known(tenant)
        if inspect.isawaitable(known):
            known = await known
        return tenant if known else None

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        response: JSONResponse | None,
        *,
        policy: bool = False,
    ) -> None:
        if scope["type"] == "websocket":
            # 1008 policy violation (no such tenant, or suspended); 1011 server error otherwise.
            refused = response is None or policy
            await send({"type": "websocket.close", "code": 1008 if refused else 1011})
            return
        if response is None:
            response = unknown_tenant_response()
        await response(scope, receive, send)


TENANT_EXEMPT_MARK = "api_kit_tenant_exempt"


def tenant_exempt(router: APIRouter) -> APIRouter:
    """Mark ``router``: its requests name their tenant themselves (e.g. in a signed body).

    ``TenantMiddleware`` lets every path under the router's prefix through with no tenant
    set (``create_api`` reads the mark), so the route must enter the tenant's context
    itself. Returns ``router``.
    """
    setattr(router, TENANT_EXEMPT_MARK, True)
    return router


def tenant_exempt_paths(routers: Iterable[APIRouter]) -> tuple[str, ...]:
    """The paths ``tenant_exempt`` routers own: their prefix, else each route's path."""
    paths: list[str] = []
    for router in routers:
        if not getattr(router, TENANT_EXEMPT_MARK, False):
            continue
        if router.prefix:
            paths.append(router.prefix)
        else:
            paths.extend(str(getattr(route, "path", "")) for route in router.routes)
    return tuple(path for path in paths if path.strip("/"))


@dataclass(frozen=True)
class TenantRouting:
    """How an app finds each request's tenant; ``create_api(tenancy=...)`` installs it.

    ``known`` (optional) refuses tenants that resolve but are not served (404).
    """

    resolver: TenantResolver
    known: KnownCheck | None = None
    exempt_paths: Sequence[str] = DEFAULT_EXEMPT_PATHS

    def middleware(self, routers: Iterable[APIRouter] = ()) -> Middleware:
        """``TenantMiddleware`` exempting ``exempt_paths`` and the ``tenant_exempt`` routers."""
        return Middleware(
            TenantMiddleware,
            resolver=self.resolver,
            known=self.known,
            exempt_paths=(*self.exempt_paths, *tenant_exempt_paths(routers)),
        )


def unknown_tenant_response() -> JSONResponse:
    """The 404 every unknown or malformed tenant gets."""
    return problem(404, UNKNOWN_TENANT_CODE, UNKNOWN_TENANT_DETAIL)


async def get_current_tenant() -> Tenant:
    """FastAPI dependency: the request's tenant; 404 ``unknown_tenant`` when there is none.

    Needs ``TenantMiddleware`` in front of the route and api_kit's error handlers
    (``create_api`` installs them) to turn the refusal into JSON.
    """
    tenant = current_tenant_or_none()
    if tenant is None:
        log.warning(
            "a route asked for the current tenant but none is set: is TenantMiddleware "
            "installed, and is the path outside its exempt_paths?"
        )
        raise ResourceNotFoundError(UNKNOWN_TENANT_CODE, UNKNOWN_TENANT_DETAIL)
    return tenant


CurrentTenantDep = Annotated[Tenant, Depends(get_current_tenant)]
