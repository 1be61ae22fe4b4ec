"""The current tenant: a validated slug carried in a context variable.

A ``contextvars`` variable: an ASGI middleware sets it per request; jobs and scripts set
it with ``tenant_context(...)`` or ``@with_tenant(...)``; ``db.session()`` and
repositories read it with ``current_tenant()``.

It follows the code that runs on its behalf where Python copies the context: tasks made
by ``asyncio.create_task`` / ``gather`` and functions run by ``asyncio.to_thread`` (and
anyio's / Starlette's threadpool). A plain ``threading.Thread`` or a bare executor does
not copy it: start those with ``contextvars.copy_context().run`` or ``tenant_bound(fn)``.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from db_shared.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    ForbiddenError,
    NotFoundError,
    RetryableError,
)

P = ParamSpec("P")
R = TypeVar("R")

# ``tenant_<slug>`` must fit PostgreSQL's 63-byte identifier limit with room to spare.
SLUG_MAX_LENGTH = 40
_SLUG = re.compile(r"[a-z][a-z0-9_]*")
RESERVED_SLUGS = frozenset(
    {"public", "core", "information_schema", "postgres", "template0", "template1"}
)
_SHOWN_MAX = 80


class InvalidTenantError(DatabaseError, ValueError):
    """A tenant slug breaks the naming rule; refused before it can reach any SQL."""

    def __init__(self, value: object, rule: str) -> None:
        self.value = value
        self.rule = rule
        super().__init__(f"Invalid tenant slug {_shown(value)}: {rule}.")


class UnknownTenantError(NotFoundError):
    """A well-formed slug (or a host) that names no tenant this deployment serves."""

    def __init__(self, key: object) -> None:
        super().__init__("Tenant", key)


class TenantSuspendedError(ForbiddenError):
    """The tenant exists but is suspended: refused until it is reactivated (HTTP 403)."""

    def __init__(self, slug: str) -> None:
        self.slug = slug
        super().__init__(
            "tenant_suspended",
            "This tenant is suspended; its administrator can have it reactivated.",
        )


class TenantMovedError(RetryableError):
    """The tenant's data was not where its cached placement said (it moved to another
    server, or its schema or database is gone there): the placement was read again, and
    running the whole unit of work again goes to the new place (``transact`` does; an
    HTTP request answers 503 with ``Retry-After``)."""

    retry_after = 1

    def __init__(self, slug: str, reason: str) -> None:
        self.slug = slug
        super().__init__(f"tenant {slug!r} was not found where it was placed ({reason}); retry")


class TenantFrozenError(DatabaseUnavailableError):
    """The tenant's writes are refused for a moment: its data is being moved to another
    server (the freeze lasts well under a second). Retry shortly (HTTP 503 with
    ``Retry-After``); reads keep working."""

    retry_after = 1

    def __init__(self, slug: str | None = None) -> None:
        self.slug = slug
        who = f"tenant {slug!r}" if slug else "this tenant"
        super().__init__(f"writes of {who} are paused while its data moves; retry shortly")


class TenantRequiredError(ConfigurationError, LookupError):
    """Code that needs the current tenant ran where none was set."""

    def __init__(self) -> None:
        super().__init__(
            "No tenant is set in this context. HTTP requests get one from "
            "api_kit.TenantMiddleware; jobs and scripts set one with "
            "`with tenant_context('acme'):` (or `async with`) or decorate the entry point "
            "with `@with_tenant('acme')`. A plain threading.Thread does not inherit it: "
            "start it with contextvars.copy_context().run or tenant_bound(fn)."
        )


def _shown(value: object) -> str:
    """``repr`` of a refused value, cut to 80 characters (headers can be huge)."""
    if not isinstance(value, str):
        return f"of type {type(value).__name__}"
    text = repr(value[: _SHOWN_MAX + 1])
    return text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 3] + "..."


def validate_tenant_slug(value: object) -> str:
    """``value`` when it is a safe tenant slug, else ``InvalidTenantError`` naming the rule.

    A slug is 1..40 characters of ``a-z``, ``0-9`` and ``_``, starts with a letter and is
    not a reserved PostgreSQL or platform schema name, so ``tenant_<slug>`` is always a
    valid, unquoted-safe identifier.
    """
    if not isinstance(value, str):
        raise InvalidTenantError(value, "a tenant slug must be a string")
    if not value:
        raise InvalidTenantError(value, "a tenant slug must not be empty")
    if len(value) > SLUG_MAX_LENGTH:
        raise InvalidTenantError(
            value,
            f"a tenant slug has at most {SLUG_MAX_LENGTH} characters (got {len(value)}), "
            "so that a schema name such as tenant_<slug> fits PostgreSQL's 63-byte limit",
        )
    if not _SLUG.fullmatch(value):
        raise InvalidTenantError(
            value,
            "a tenant slug starts with a lower-case letter and holds only a-z, 0-9 and _",
        )
    if value in RESERVED_SLUGS or value.startswith("pg_"):
        raise InvalidTenantError(value, "that name is reserved by PostgreSQL or the platform")
    return value


def _no_data() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Tenant:
    """Who a unit of work runs for. The slug is validated when the tenant is made.

    ``region`` names a deployment region (``us``, ``eu``) where one applies; ``data``
    holds read-only extras a resolver found (plan, registry id...). Hashing uses slug
    and region only, so tenants are dict keys and set members.
    """

    slug: str
    region: str | None = None
    data: Mapping[str, str] = field(default_factory=_no_data, hash=False)

    def __post_init__(self) -> None:
        validate_tenant_slug(self.slug)
        if not isinstance(self.data, MappingProxyType):
            object.__setattr__(self, "data", MappingProxyType(dict(self.data)))

    def __reduce__(self) -> tuple[type[Tenant], tuple[str, str | None, dict[str, str]]]:
        # mappingproxy does not pickle; tenants cross process boundaries (tenant migrations).
        return (Tenant, (self.slug, self.region, dict(self.data)))


TenantLike = Tenant | str


# Tenants made from a bare slug, by slug: they are immutable, and a unit of work that
# enters ``tenant_context("acme")`` should not pay for validating and allocating a new one
# (the garbage alone showed in bench/tenancy_sessions.py). Bounded: cleared when full.
_BY_SLUG: dict[str, Tenant] = {}
_BY_SLUG_MAX = 10_000


def as_tenant(value: TenantLike) -> Tenant:
    """A ``Tenant`` from a tenant or a slug (validated)."""
    if isinstance(value, Tenant):
        return value
    found = _BY_SLUG.get(value) if isinstance(value, str) else None
    if found is None:
        found = Tenant(value)  # the constructor validates the slug
        if len(_BY_SLUG) >= _BY_SLUG_MAX:
            _BY_SLUG.clear()
        _BY_SLUG[value] = found
    return found


_current: contextvars.ContextVar[Tenant | None] = contextvars.ContextVar(
    "db_shared.current_tenant", default=None
)


def current_tenant() -> Tenant:
    """The tenant this code runs for; ``TenantRequiredError`` says how to set one."""
    tenant = _current.get()
    if tenant is None:
        raise TenantRequiredError()
    return tenant


def current_tenant_or_none() -> Tenant | None:
    """The tenant this code runs for, or ``None`` outside any tenant context."""
    return _current.get()


class tenant_context:  # lower-case: used like contextlib's managers
    """Run a block for a tenant: ``with tenant_context("acme"):`` or ``async with``.

    On exit the previous tenant (or none) is restored, even when the block raises, so
    contexts nest. Enter one instance from one task at a time.
    """

    __slots__ = ("_tokens", "tenant")

    def __init__(self, tenant: TenantLike) -> None:
        self.tenant = as_tenant(tenant)
        self._tokens: list[contextvars.Token[Tenant | None]] = []

    def __enter__(self) -> Tenant:
        self._tokens.append(_current.set(self.tenant))
        return self.tenant

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _current.reset(self._tokens.pop())

    async def __aenter__(self) -> Tenant:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


TenantSource = TenantLike | Callable[..., TenantLike | Awaitable[TenantLike]]


def with_tenant(source: TenantSource) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a sync or async function to run inside ``tenant_context``.

    ``source`` is a tenant, a slug, or a callable given the call's arguments that returns
    one (an async function's resolver may itself be async), e.g.
    ``@with_tenant(lambda job: job.tenant_slug)``. A literal slug is validated at once.
    """
    if isinstance(source, str):
        source = as_tenant(source)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            # The body would run after the wrapper returned, outside the context.
            raise TypeError(
                f"with_tenant cannot wrap the generator {fn.__qualname__}; "
                "enter tenant_context inside it instead"
            )
        if inspect.iscoroutinefunction(fn):
            async_fn = cast(Callable[P, Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                chosen = _chosen(source, args, kwargs)
                if inspect.isawaitable(chosen):
                    chosen = await chosen
                async with tenant_context(chosen):
                    return await async_fn(*args, **kwargs)

            return cast(Callable[P, R], run_async)

        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            chosen = _chosen(source, args, kwargs)
            if inspect.isawaitable(chosen):
                if inspect.iscoroutine(chosen):
                    chosen.close()
                raise TypeError(
                    f"the tenant resolver of {fn.__qualname__} is async but the function "
                    "is not; make the resolver sync"
                )
            with tenant_context(chosen):
                return fn(*args, **kwargs)

        return run

    return decorate


def _chosen(
    source: TenantSource, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> TenantLike | Awaitable[TenantLike]:
    if isinstance(source, Tenant | str):
        return source
    return source(*args, **kwargs)


def tenant_bound(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` bound to the tenant current now, for threads, executors and callbacks.

    ``threading.Thread(target=tenant_bound(work)).start()`` runs ``work`` for this tenant.
    Raises ``TenantRequiredError`` at once when no tenant is set.
    """
    return with_tenant(current_tenant())(fn)
