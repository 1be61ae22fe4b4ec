"""``db NAME studio``: a web UI over a database's tables (read-only unless --write), via sqladmin.

One sqladmin ``ModelView`` per mapped class of the db lib, built generically, so a new model
shows up with no edit here. The studio is read-only unless started with ``write=True``, and
that is enforced twice: the views offer no create/edit/delete (sqladmin answers 403 to a
crafted request), and every transaction of the studio's engine is ``READ ONLY`` in
PostgreSQL itself, so nothing the views might miss can write either.

sqladmin and uvicorn come with the ``db-tools[studio]`` extra and are imported lazily: the
rest of db_tools works without them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import types
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, String, select
from sqlalchemy.engine import URL
from sqlalchemy.orm import DeclarativeBase

from db_kit.config import DatabaseConfig
from db_kit.engine import build_admin_engine, engine_kwargs
from db_kit.settings import DatabaseSettings
from db_shared.errors import ConfigurationError
from db_shared.tenancy import UnknownTenantError, validate_tenant_slug

if TYPE_CHECKING:
    from sqladmin import ModelView
    from sqlalchemy.ext.asyncio import AsyncEngine
    from starlette.applications import Starlette

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5555
BASE_URL = "/admin"
PAGE_SIZE = 25
MISSING_EXTRA = (
    "The studio needs sqladmin and uvicorn (the db-kit[studio] extra): in this workspace run "
    "`uv sync --all-packages`; elsewhere install `db-kit[studio]`."
)


def _require_extra() -> None:
    """Fail with the install command, not an ImportError, when the extra is missing."""
    try:
        import sqladmin  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(MISSING_EXTRA) from exc


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: assume it reaches a network


def exposure_warning(host: str) -> str | None:
    """The warning to print when the studio would listen beyond this machine."""
    if is_loopback(host):
        return None
    return (
        f"the studio has no login and is listening on {host}: anyone who reaches this "
        f"address can read every row. Prefer --host {DEFAULT_HOST} (the default) and an "
        "SSH tunnel."
    )


# views -----------------------------------------------------------------------------------


CREDENTIAL = re.compile(r"password|secret|token", re.IGNORECASE)


def model_views(
    base: type[DeclarativeBase], *, writable: bool, category: str | None = None
) -> list[type[ModelView]]:
    """One ``ModelView`` per mapped class of ``base``: every column but credentials listed,
    sortable and exported, text columns searchable; create/edit/delete only when
    ``writable``."""
    from sqladmin import ModelView

    views: list[type[ModelView]] = []
    for mapper in sorted(base.registry.mappers, key=lambda m: m.class_.__name__):
        # Credentials (password and token hashes, secrets) are not shown, searched or
        # exported: a hash on a screen or in a CSV is one step from an offline attack.
        shown = [attr for attr in mapper.column_attrs if not CREDENTIAL.search(attr.key)]
        columns = [attr.key for attr in shown]
        searchable = [
            attr.key
            for attr in shown
            if len(attr.columns) == 1 and isinstance(attr.columns[0].type, String)
        ]
        table = mapper.tables[0]
        attrs: dict[str, Any] = {
            "name": mapper.class_.__name__,
            "name_plural": f"{mapper.class_.__name__} ({table.name})",
            "column_list": columns,
            "column_details_list": columns,
            "column_sortable_list": columns,
            "column_export_list": columns,
            "column_searchable_list": searchable,
            "can_create": writable,
            "can_edit": writable,
            "can_delete": writable,
            "can_import": False,  # bulk writes stay with migrations and seeds
            "can_export": True,
            "page_size": PAGE_SIZE,
        }
        if category:
            attrs["category"] = category

        def body(namespace: dict[str, Any], attrs: dict[str, Any] = attrs) -> None:
            namespace.update(attrs)

        view = types.new_class(
            f"{mapper.class_.__name__}View", (ModelView,), {"model": mapper.class_}, body
        )
        views.append(view)
    return views


# targets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudioTarget:
    """Which database (and tenant schema) a studio shows."""

    url: URL
    schema: str | None = None  # schema-per-tenant: the tenant's schema for model tables
    label: str = ""  # "tenant acme", shown in the title


def resolve_target(
    config: DatabaseConfig,
    settings: DatabaseSettings,
    *,
    tenant: str | None = None,
    url: URL | None = None,
) -> StudioTarget:
    """The URL and schema to show, checked by connecting once: an unreachable server, or an
    unknown or malformed tenant, fails here with one clear error, before serving.

    Schema-per-tenant (``config.tenancy``): ``tenant`` must be in the registry; without it
    the default schema is shown, as ``db NAME seed`` uses it. Database-per-tenant: the
    tenant's URL from the settings' tenant map.
    """
    target = url if url is not None else settings.resolved_url()
    if tenant is None:
        _check(config, settings, target)
        return StudioTarget(target)
    slug = validate_tenant_slug(tenant)  # before it names any schema or database
    if config.tenancy is not None:
        schema = config.tenancy.schema_for(slug)
        _check(config, settings, target, registered=slug)
        return StudioTarget(target, schema, f"tenant {slug}")
    from db_kit.migrations import TenantDatabaseMigrator
    from db_kit.tenancy import TenantDatabaseSettings

    if not isinstance(settings, TenantDatabaseSettings):
        raise ConfigurationError(
            f"The {config.name} database has no tenants: drop --tenant to browse it."
        )
    try:
        tenant_url = TenantDatabaseMigrator(config).url_for(slug)
    except UnknownTenantError:
        raise ConfigurationError(
            f"Unknown tenant {slug!r}: add it to {settings.tenant_urls_variable} "
            f"(`db {config.name} tenants list` shows the configured ones)."
        ) from None
    _check(config, settings, tenant_url)
    return StudioTarget(tenant_url, None, f"tenant {slug}")


def _check(
    config: DatabaseConfig, settings: DatabaseSettings, url: URL, *, registered: str | None = None
) -> None:
    """Connect once (driver errors become ``db_shared`` errors); with ``registered``, that
    slug must be in the schema-per-tenant registry."""
    from db_kit.errors import translating

    engine = build_admin_engine(settings, url)
    try:
        with translating(url=url), engine.connect() as conn:
            if registered is not None:
                _check_registered(config, conn, registered)
    finally:
        engine.dispose()


def _check_registered(config: DatabaseConfig, conn: Connection, slug: str) -> None:
    from sqlalchemy import inspect

    assert config.tenancy is not None
    tenant = config.tenancy.model
    table = tenant.__table__  # type: ignore[attr-defined]
    if not inspect(conn).has_table(table.name, schema=table.schema):
        raise ConfigurationError(
            f"The {config.name} database has no tenant registry yet: run "
            f"`db {config.name} migrate`, then `db {config.name} tenants create {slug}`."
        )
    if conn.execute(select(tenant.slug).where(tenant.slug == slug)).first() is None:
        raise ConfigurationError(
            f"Unknown tenant {slug!r} in the {config.name} registry: create it with "
            f"`db {config.name} tenants create {slug}` (`db {config.name} tenants list` "
            "shows the others)."
        )


# the app ---------------------------------------------------------------------------------


@dataclass
class Studio:
    """The studio's ASGI app and the engine behind it (disposed when the app shuts down)."""

    app: Starlette
    engine: AsyncEngine
    title: str
    writable: bool
    target: StudioTarget


def studio_engine(
    settings: DatabaseSettings, target: StudioTarget, *, write: bool = False
) -> AsyncEngine:
    """The studio's engine: every transaction ``READ ONLY`` unless ``write``; model tables
    translated to the tenant's schema when there is one."""
    from sqlalchemy.ext.asyncio import create_async_engine

    kwargs = engine_kwargs(settings, prepare=target.schema is None)
    kwargs.update(pool_size=2, max_overflow=3)  # one browser, a few requests at a time
    options: dict[str, Any] = {
        # psycopg's Connection.read_only: BEGIN READ ONLY, enforced by PostgreSQL; works
        # behind PgBouncer too (no startup parameter needed).
        "postgresql_readonly": not write,
    }
    if target.schema is not None:
        options["schema_translate_map"] = {None: target.schema}
    return create_async_engine(target.url, **kwargs).execution_options(**options)


def build_studio(
    config: DatabaseConfig,
    *,
    tenant: str | None = None,
    write: bool = False,
    url: URL | None = None,
    settings: DatabaseSettings | None = None,
) -> Studio:
    """The studio app over ``config``'s models (and its tenant registry, read-only)."""
    _require_extra()
    from sqladmin import Admin
    from sqlalchemy.ext.asyncio import async_sessionmaker
    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse
    from starlette.routing import Route

    settings = settings if settings is not None else config.settings()
    target = resolve_target(config, settings, tenant=tenant, url=url)
    engine = studio_engine(settings, target, write=write)
    mode = "read-write" if write else "read-only"
    title = f"{config.name} studio" + (f" · {target.label}" if target.label else "")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    async def home(request: Any) -> RedirectResponse:
        return RedirectResponse(f"{BASE_URL}/")

    app = Starlette(routes=[Route("/", home)], lifespan=lifespan)
    admin = Admin(
        app,
        session_maker=async_sessionmaker(engine, expire_on_commit=False),
        base_url=BASE_URL,
        title=f"{title} ({mode})",
    )
    views: Sequence[type[ModelView]] = model_views(config.base, writable=write)
    if config.tenancy is not None:
        # Tenants are created with `db NAME tenants create` (schema + migrations), never as
        # a bare row: the registry is always read-only here.
        registry = config.tenancy.registry
        views = [*views, *model_views(registry.base, writable=False, category="registry")]
    for view in views:
        admin.add_view(view)
    return Studio(app=app, engine=engine, title=title, writable=write, target=target)


def check_port_free(host: str, port: int) -> None:
    """A clear error now rather than uvicorn's traceback after start-up."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigurationError(
                f"Cannot listen on {host}:{port} ({exc.strerror or exc}): pass another "
                "--port, or stop what is using it."
            ) from None


def serve(studio: Studio, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve the studio until interrupted (Ctrl+C); ``check_port_free`` first for a clear
    error when the port is taken."""
    import uvicorn

    uvicorn.run(studio.app, host=host, port=port, log_level="warning", lifespan="on")
