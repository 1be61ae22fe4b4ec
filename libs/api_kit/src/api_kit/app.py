"""Build a FastAPI app that binds tokens once at start-up and disposes them at shutdown."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse

from api_kit._svcs import svcs
from api_kit.errors import install_error_handlers
from api_kit.observability import CorrelationIdMiddleware, configure_logging, metrics
from db_shared import DATABASE, Database, TenantHealth, Token
from db_shared.errors import DatabaseError

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
    version: str = "0.1.0",
    description: str = "",
    max_body_size: int = 1_048_576,
) -> FastAPI:
    """A FastAPI app: binders run once in the lifespan, then every required token is checked.

    An unbound token stops start-up with an error naming the app and the missing binding.
    Bodies over ``max_body_size`` bytes are refused with 413 before they are read whole.
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

    app = FastAPI(
        title=name,
        version=version,
        description=description,
        lifespan=lifespan,
        max_body_size=max_body_size,
    )
    install_error_handlers(app)
    configure_logging()
    app.add_middleware(CorrelationIdMiddleware)
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    for router in routers:
        app.include_router(router)

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready", tags=["health"], response_model=None)
    async def ready(registry: svcs.fastapi.DepRegistry) -> JSONResponse:
        """200 when the bound database answers a ping, 503 (with the reason) when not.

        Tenancy: every tenant's database is pinged (database-per-tenant) or every tenant's
        schema checked (schema-per-tenant: present, last migration succeeded); unhealthy
        tenants are listed ("degraded", still 200) and only all of them down makes it 503.
        """
        async with svcs.Container(registry) as container:
            database: Database = container.get(DATABASE)  # type: ignore[call-overload]
        try:
            if isinstance(database, TenantHealth):
                return await _tenants_ready(database)
            await database.ping()
        except DatabaseError as exc:
            return JSONResponse(
                {"status": "unavailable", "database": database.name, "reason": str(exc)},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        return JSONResponse({"status": "ok", "database": database.name})

    return app


async def _tenants_ready(database: TenantHealth) -> JSONResponse:
    problems = await database.ping_tenants()
    if not problems:  # single-tenant, or no tenant yet
        return JSONResponse({"status": "ok", "database": database.name})
    tenants = {slug: reason or "ok" for slug, reason in sorted(problems.items())}
    down = [slug for slug, reason in problems.items() if reason is not None]
    if tenants and len(down) == len(tenants):
        body = {"status": "unavailable", "database": database.name, "tenants": tenants}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    status = "degraded" if down else "ok"
    return JSONResponse({"status": status, "database": database.name, "tenants": tenants})
