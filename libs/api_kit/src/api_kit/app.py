"""Build a FastAPI app that binds tokens once at start-up and disposes them at shutdown."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.middleware import Middleware

from api_kit._svcs import svcs
from api_kit.contract import BodyLimitMiddleware, install_contract, operation_id
from api_kit.errors import install_error_handlers
from api_kit.observability import CorrelationIdMiddleware, configure_logging, metrics
from api_kit.positions import DbPositionMiddleware
from api_kit.tenancy import TenantRouting
from db_shared import DATABASE, Database, ReplicaHealth, ServerHealth, TenantHealth, Token
from db_shared.errors import ConfigurationError, DatabaseError, DatabaseUnavailableError

log = logging.getLogger(__name__)

Binder = Callable[[svcs.Registry], None]


def bind_database(database: Database) -> Binder:
    """A binder that registers ``database`` under ``DATABASE`` and disposes it at shutdown."""

    async def dispose() -> None:
        await database.dispose()

    def bind(registry: svcs.Registry) -> None:
        registry.register_value(DATABASE, database, on_registry_close=dispose)  # type: ignore[arg-type]

    return bind


def create_api(
    *,
    name: str,
    binders: Sequence[Binder],
    routers: Sequence[APIRouter],
    requires: Sequence[Token[object]] = (DATABASE,),  # type: ignore[assignment]
    tenancy: TenantRouting | None = None,
    version: str = "0.1.0",
    description: str = "",
    max_body_size: int = 1_048_576,
) -> FastAPI:
    """A FastAPI app: binders run once in the lifespan, then every required token is checked.

    An unbound token stops start-up with an error naming the app and the missing binding.
    Bodies over ``max_body_size`` bytes are refused with 413 before they are read whole.
    Every error is an ``application/problem+json`` ``Problem`` (``api_kit.errors``), and the
    OpenAPI document declares each one an operation can answer (``api_kit.contract``);
    operation ids read ``<tag>-<function>`` (``auth-register``).
    With ``tenancy`` every request runs for its tenant (``TenantMiddleware``, inside the
    correlation id so tenant refusals carry one); routers marked ``tenant_exempt`` and the
    health, metrics and docs paths run without. Logging gets the correlation id and tenant
    on every record (``configure_logging``) when the app is built, never on import.
    """

    @svcs.fastapi.lifespan
    async def lifespan(
        app: FastAPI, registry: svcs.Registry
    ) -> AsyncGenerator[dict[str, object] | None, None]:
        for bind in binders:
            bind(registry)
        for token in requires:
            if token not in registry:  # type: ignore[operator]  # svcs keys are hashables
                raise token.unbound(f"The app {name!r} includes routers that need it")
        yield {}

    # Outermost first: the correlation id wraps everything, tenant refusals included.
    middleware = [
        Middleware(CorrelationIdMiddleware),
        Middleware(BodyLimitMiddleware, max_body_size=max_body_size),
        # Read-your-writes: X-DB-Position in (what to see) and out (what this request wrote).
        Middleware(DbPositionMiddleware),
    ]
    if tenancy is not None:
        middleware.append(tenancy.middleware(routers))
    app = FastAPI(
        title=name,
        version=version,
        description=description,
        lifespan=lifespan,
        middleware=middleware,
        max_body_size=None,  # BodyLimitMiddleware: FastAPI's own answers 413 in plain text
        generate_unique_id_function=operation_id,
    )
    install_error_handlers(app)
    install_contract(app)
    configure_logging()
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    for router in routers:
        include_flat(app, router)

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/health/ready",
        tags=["health"],
        response_model=None,
        responses={
            200: {"model": Readiness, "description": "Ready (or degraded: some tenants down)"},
            503: {"model": Readiness, "description": "Not ready (`Retry-After`)"},
        },
    )
    async def ready(registry: svcs.fastapi.DepRegistry) -> JSONResponse:
        """200 when the bound database answers a ping, 503 (with a reason class) when not.

        Tenancy: every tenant's database is pinged (database-per-tenant) or every tenant's
        schema checked (schema-per-tenant: present, last migration succeeded); unhealthy
        tenants are listed ("degraded", still 200) and only all of them down makes it 503.
        The endpoint is anonymous: it answers a status and reason classes
        (``database_unavailable``, ``migration_failed``...), never hosts, ports, database
        names or exception text; those go to the log (``api_kit.app``, WARNING).
        """
        async with svcs.Container(registry) as container:
            database: Database = container.get(DATABASE)  # type: ignore[call-overload]
        try:
            if isinstance(database, TenantHealth):
                answer = await _tenants_ready(database)
            else:
                await database.ping()
                answer = JSONResponse({"status": "ok"})
        except DatabaseError as exc:
            log.warning("not ready: database %s: %s", database.name, exc)
            return _unavailable({"reason": _error_class(exc)})
        if isinstance(database, ServerHealth) and answer.status_code == 200:
            answer = await _with_servers(database, answer)
        if isinstance(database, ReplicaHealth) and answer.status_code == 200:
            return await _with_replicas(database, answer)
        return answer

    return app


# What ``add_api_route`` takes, read back from a route built by a router (names match).
_ROUTE_OPTIONS = (
    "response_model",
    "status_code",
    "tags",
    "dependencies",
    "summary",
    "description",
    "response_description",
    "responses",
    "deprecated",
    "name",
    "methods",
    "operation_id",
    "response_model_include",
    "response_model_exclude",
    "response_model_by_alias",
    "response_model_exclude_unset",
    "response_model_exclude_defaults",
    "response_model_exclude_none",
    "include_in_schema",
    "response_class",
    "callbacks",
    "openapi_extra",
    "generate_unique_id_function",
    "strict_content_type",
    "max_body_size",
    "form_limits",
)


def include_flat(app: FastAPI, router: APIRouter) -> None:
    """``app.include_router(router)``, with the router's routes added to the app itself.

    FastAPI (0.16x) keeps an included router as one route that matches its routes at
    request time, twice (``matches`` then ``handle``), and re-checks its routes' version on
    each: ~15 us a request (bench/current_user.py, README). A route built by
    a router already carries the router's prefix, tags, dependencies and responses, so
    adding it again to the app gives the same path, operation and OpenAPI document (the
    app's operation ids included: the unresolved defaults stay unresolved until here).
    Routers that need more (nested routers, other route kinds, lifespans or start-up
    handlers) are included the ordinary way.
    """
    routes = router.routes
    plain = (
        all(type(route) is APIRoute for route in routes)
        and not router.on_startup
        and not router.on_shutdown
        and type(router.lifespan_context) is type(APIRouter().lifespan_context)
    )
    if not plain:
        app.include_router(router)
        return
    for route in routes:
        assert isinstance(route, APIRoute)
        options = {name: getattr(route, name) for name in _ROUTE_OPTIONS}
        app.router.add_api_route(route.path, route.endpoint, **options)


class ReplicaReadiness(BaseModel):
    """One read replica: ``ok``, ``lagging``, ``down``, ``not_a_replica`` or ``unknown``, and
    its replay lag in ms when known."""

    status: str
    lag_ms: float | None = None


class Readiness(BaseModel):
    """The readiness answer: a status, and reason classes (never hosts or exception text)."""

    status: str
    reason: str | None = None
    tenants: dict[str, str] | None = None
    # Tenants on several servers: each server's primary, ``ok`` or a reason class.
    servers: dict[str, str] | None = None
    replicas: dict[str, ReplicaReadiness] | None = None


async def _with_servers(database: ServerHealth, answer: JSONResponse) -> JSONResponse:
    """Add each server's state (a fleet); one down makes the answer ``degraded`` (200: the
    other servers' tenants are served)."""
    states = await database.server_health()
    if not states:
        return answer
    body = json.loads(bytes(answer.body))
    servers: dict[str, str] = {}
    for name, reason in sorted(states.items()):
        if reason is None:
            servers[name] = "ok"
        else:
            log.warning("degraded: server %s: %s", name, reason)
            servers[name] = (
                "timeout" if reason.startswith("no answer within") else "database_unavailable"
            )
    body["servers"] = servers
    if any(state != "ok" for state in servers.values()):
        body["status"] = "degraded"
    return JSONResponse(body)


async def _with_replicas(database: ReplicaHealth, answer: JSONResponse) -> JSONResponse:
    """Add each replica's state; one not ``ok`` makes the answer ``degraded`` (still 200:
    the primary serves its reads)."""
    states = await database.replica_health()
    if not states:
        return answer
    body = json.loads(bytes(answer.body))
    body["replicas"] = {
        name: {"status": state, "lag_ms": None if lag is None else round(lag, 1)}
        for name, (state, lag) in sorted(states.items())
    }
    if any(state != "ok" for state, _ in states.values()):
        body["status"] = "degraded"
    return JSONResponse(body)


def _unavailable(body: Mapping[str, object]) -> JSONResponse:
    return JSONResponse(
        {"status": "unavailable", **body}, status_code=503, headers={"Retry-After": "5"}
    )


def _error_class(exc: DatabaseError) -> str:
    if isinstance(exc, DatabaseUnavailableError):
        return "database_unavailable"
    if isinstance(exc, ConfigurationError):
        return "misconfigured"
    return "database_error"


def tenant_reason_class(reason: str) -> str:
    """The public class of a tenant's health reason (``TenantHealth.ping_tenants`` text)."""
    if reason.startswith("schema ") and reason.endswith(" is missing"):
        return "schema_missing"
    if reason.startswith("its last migration failed"):
        return "migration_failed"
    if reason.startswith("no answer within"):
        return "timeout"
    return "database_unavailable"


async def _tenants_ready(database: TenantHealth) -> JSONResponse:
    problems = await database.ping_tenants()
    if not problems:  # single-tenant, or no tenant yet
        return JSONResponse({"status": "ok"})
    tenants: dict[str, str] = {}
    for slug, reason in sorted(problems.items()):
        if reason is None:
            tenants[slug] = "ok"
        else:
            log.warning("not ready: database %s, tenant %s: %s", database.name, slug, reason)
            tenants[slug] = tenant_reason_class(reason)
    down = [slug for slug, reason in problems.items() if reason is not None]
    if len(down) == len(tenants):
        classes = set(tenants.values())
        reason = classes.pop() if len(classes) == 1 else "tenants_unavailable"
        return _unavailable({"reason": reason, "tenants": tenants})
    return JSONResponse({"status": "degraded" if down else "ok", "tenants": tenants})
