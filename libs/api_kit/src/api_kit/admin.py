"""The super-admin HTTP API: tenant lifecycle, plugins, domains, admins and the audit.

``admin_router(lambda actor: TenantAdmin(config, actor=actor, engine=...))`` gives an app the
``/admin`` routes over its tenant registry. They run without a tenant (``tenant_exempt``)
and only for ``Authorization: Bearer sa_...``, a super-admin token (``db NAME admins add``
or ``TenantAdmin.add_super_admin``); anything else is 401 with ``WWW-Authenticate: Bearer``.
Every change is audited as ``admin:<email>`` in the same transaction.

api_kit imports no toolkit code (tests/test_import_graph.py), so the lifecycle service is
handed in: ``TenantAdministration`` is the shape ``db_kit.tenancy.admin.TenantAdmin`` has,
and the app, which knows its database URL, builds one per request and actor.

Dropping a tenant is not offered over HTTP: it destroys the tenant's data for good, so it
stays a deliberate operator action (``db NAME tenants drop SLUG``, which asks first).
"""

# No ``from __future__ import annotations``: the routes' dependency alias is local to
# ``admin_router``, and FastAPI resolves string annotations in module globals only.
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Body, Depends, Path, Query, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, StringConstraints

from api_kit.contract import problems
from api_kit.tenancy import tenant_exempt
from db_shared.errors import UnauthenticatedError
from db_shared.tenancy import InvalidTenantError, validate_tenant_slug

__all__ = [
    "AdminFactory",
    "TenantAdministration",
    "admin_router",
]

# --- what the router needs of the lifecycle service (db_kit's TenantAdmin has this shape) ---


class TenantRecord(Protocol):
    @property
    def slug(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def region(self) -> str | None: ...
    @property
    def location(self) -> str: ...
    @property
    def server(self) -> str: ...
    @property
    def revision(self) -> str | None: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def domains(self) -> tuple[str, ...]: ...
    @property
    def plugins(self) -> tuple[tuple[str, bool], ...]: ...


class SuperAdminRecord(Protocol):
    @property
    def email(self) -> str: ...
    @property
    def external_id(self) -> str: ...
    @property
    def has_token(self) -> bool: ...
    @property
    def created_at(self) -> datetime: ...


class AuditRecord(Protocol):
    @property
    def at(self) -> datetime: ...
    @property
    def actor(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def tenant(self) -> str | None: ...
    @property
    def detail(self) -> dict[str, Any]: ...


class TenantAdministration(Protocol):
    """The synchronous lifecycle service the routes call (in a worker thread)."""

    def tenants(self) -> Sequence[TenantRecord]: ...
    def tenant(self, slug: str) -> TenantRecord: ...
    def create(
        self, slug: str, name: str | None = None, region: str | None = None
    ) -> TenantRecord: ...
    def clone(
        self, template: str, slug: str, name: str | None = None, region: str | None = None
    ) -> TenantRecord: ...
    def suspend(self, slug: str, reason: str | None = None) -> TenantRecord: ...
    def reactivate(self, slug: str) -> TenantRecord: ...
    def rename(self, slug: str, new_slug: str) -> TenantRecord: ...
    def add_plugin(self, plugin_id: str, name: str, version: str) -> None: ...
    def plugins(self) -> Sequence[tuple[str, str, str]]: ...
    def set_plugin(
        self,
        slug: str,
        plugin_id: str,
        *,
        enabled: bool,
        configuration: dict[str, Any] | None = None,
    ) -> TenantRecord: ...
    def add_domain(self, slug: str, domain: str, *, primary: bool = False) -> TenantRecord: ...
    def remove_domain(self, domain: str) -> str: ...
    def super_admins(self) -> Sequence[SuperAdminRecord]: ...
    def add_super_admin(self, email: str, external_id: str | None = None) -> str: ...
    def rotate_admin_token(self, email: str) -> str: ...
    def remove_super_admin(self, email: str) -> None: ...
    def authenticate(self, token: str) -> SuperAdminRecord | None: ...
    def audit(self, slug: str | None = None, *, limit: int = 50) -> Sequence[AuditRecord]: ...


# The service acting as ``actor`` (the audit's "who"): e.g.
# ``lambda actor: TenantAdmin(core_db.CONFIG, actor=actor, engine=db.engines.sync_engine)``.
AdminFactory = Callable[[str], TenantAdministration]

# --- validated inputs: every value that reaches SQL is bounded and NUL-free -----------------

SLUG_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
PLUGIN_ID_PATTERN = r"^[a-z][a-z0-9_.-]{0,99}$"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DOMAIN_PATTERN = rf"^{_LABEL}(?:\.{_LABEL})+$"
# What TenantAdmin accepts as an e-mail, less control characters.
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f]{1,200}@[^@\s\x00-\x1f\x7f]{1,119}$"
LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"  # one line of text: no control characters
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"  # text: tabs and newlines allowed
MAX_CONFIGURATION_DEPTH = 16
MAX_CONFIGURATION_NODES = 10_000


def _tenant_slug(value: str) -> str:
    try:
        return validate_tenant_slug(value)
    except InvalidTenantError as exc:
        raise ValueError(exc.rule) from None  # the rule, not the value (never echoed)


def _line(max_length: int, min_length: int = 1) -> Any:
    return StringConstraints(
        strip_whitespace=True, min_length=min_length, max_length=max_length, pattern=LINE_PATTERN
    )


Slug = Annotated[
    str,
    StringConstraints(pattern=SLUG_PATTERN),
    AfterValidator(_tenant_slug),
    Field(description="Tenant slug: a-z, 0-9, _; starts with a letter; 1-40 characters"),
]
SlugPath = Annotated[
    str,
    Path(pattern=SLUG_PATTERN, description="Tenant slug"),
    AfterValidator(_tenant_slug),
]
PluginIdPath = Annotated[
    str, Path(pattern=PLUGIN_ID_PATTERN, description="Plugin id: a-z, 0-9, _ . - (<= 100)")
]
DomainPath = Annotated[
    str, Path(max_length=253, pattern=DOMAIN_PATTERN, description="Host name (no port)")
]
EmailPath = Annotated[
    str, Path(max_length=320, pattern=EMAIL_PATTERN, description="The admin's e-mail address")
]
TenantName = Annotated[str, _line(200), Field(description="Display name (default: the slug)")]
Region = Annotated[str, _line(20), Field(description="Region label, e.g. us or eu")]
Domain = Annotated[
    str, Field(max_length=253, pattern=DOMAIN_PATTERN, description="app.example.com (no port)")
]
Email = Annotated[str, Field(max_length=320, pattern=EMAIL_PATTERN)]


def _check_configuration(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    # JSONB refuses NUL in text and non-finite numbers (json.loads accepts NaN): a 422 here,
    # not a 500 from PostgreSQL; depth and size keep one request's work bounded.
    nodes = 0

    def walk(node: JsonValue, depth: int) -> None:
        nonlocal nodes
        nodes += 1
        if nodes > MAX_CONFIGURATION_NODES or depth > MAX_CONFIGURATION_DEPTH:
            raise ValueError(
                f"at most {MAX_CONFIGURATION_NODES} values nested {MAX_CONFIGURATION_DEPTH} deep"
            )
        if isinstance(node, str):
            if "\x00" in node:
                raise ValueError("text cannot contain NUL characters")
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise ValueError("numbers must be finite")
        elif isinstance(node, dict):
            for key, item in node.items():
                walk(key, depth + 1)
                walk(item, depth + 1)
        elif isinstance(node, list):
            for item in node:
                walk(item, depth + 1)

    walk(value, 0)
    return value


Configuration = Annotated[dict[str, JsonValue], AfterValidator(_check_configuration)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantIn(_In):
    slug: Slug
    name: TenantName | None = None
    region: Region | None = None


class CloneIn(_In):
    slug: Slug = Field(description="The new tenant's slug")
    name: TenantName | None = None
    region: Annotated[Region | None, Field(description="Default: the template's region")] = None


class SuspendIn(_In):
    reason: (
        Annotated[
            str,
            StringConstraints(strip_whitespace=True, max_length=500, pattern=TEXT_PATTERN),
            Field(description="Why (kept in the audit)"),
        ]
        | None
    ) = None


class RenameIn(_In):
    slug: Slug = Field(description="The new slug; the tenant's data is kept")


class PluginIn(_In):
    name: Annotated[str, _line(200)]
    version: Annotated[str, _line(50)]


class TenantPluginIn(_In):
    enabled: bool
    configuration: Annotated[
        Configuration | None, Field(description="Replaces the stored one when given")
    ] = None


class DomainIn(_In):
    domain: Domain
    primary: bool = Field(default=False, description="Make it the tenant's primary domain")


class SuperAdminIn(_In):
    email: Email
    external_id: Annotated[str, _line(255)] | None = Field(
        default=None, description="The admin's id at your sign-in provider (default: the e-mail)"
    )


# --- answers -------------------------------------------------------------------------------


class TenantPluginOut(BaseModel):
    id: str
    enabled: bool


class TenantOut(BaseModel):
    slug: str
    name: str
    status: str = Field(description="provisioning, active, suspended, failed...")
    region: str | None
    location: str = Field(description="Its schema (schema-per-tenant) or database name")
    server: str = Field(description="The server holding its data ('default': the main one)")
    revision: str | None = Field(description="The migration revision its data is at")
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    domains: list[str] = Field(description="Primary first")
    plugins: list[TenantPluginOut]


class PluginOut(BaseModel):
    id: str
    name: str
    version: str


class SuperAdminOut(BaseModel):
    email: str
    external_id: str
    has_token: bool
    created_at: datetime


class AdminTokenOut(BaseModel):
    email: str
    token: str = Field(description="Shown this once: the registry keeps only its SHA-256")


class AuditOut(BaseModel):
    at: datetime
    actor: str = Field(description="Who: admin:<email> over HTTP, cli:<user> from the CLI")
    action: str
    tenant: str | None
    detail: dict[str, Any]


def _tenant_out(info: TenantRecord) -> TenantOut:
    return TenantOut(
        slug=info.slug, name=info.name, status=info.status, region=info.region,
        location=info.location, server=info.server, revision=info.revision,
        last_error=info.last_error,
        created_at=info.created_at, updated_at=info.updated_at, domains=list(info.domains),
        plugins=[TenantPluginOut(id=p, enabled=e) for p, e in info.plugins],
    )  # fmt: skip


# --- the router ----------------------------------------------------------------------------

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="SuperAdminToken",
    description="A super-admin API token (sa_...): `db NAME admins add EMAIL` prints one",
)
_NOT_FOUND = "No such tenant, plugin, domain or admin"
_READ = problems(503)
_LOOKUP = problems(404, 503, _404=_NOT_FOUND)
_CHANGE = problems(404, 409, 503, _404=_NOT_FOUND)


def admin_router(admin: AdminFactory) -> APIRouter:
    """The ``/admin`` routes over the registry ``admin`` works on (see the module docstring).

    No tenant drop over HTTP: it is irreversible, so only the CLI does it.
    """
    router = tenant_exempt(APIRouter(prefix="/admin", tags=["admin"]))

    # Plain ``def``: FastAPI runs the synchronous registry calls in its worker threads.
    def acting_admin(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> TenantAdministration:
        if credentials is None:
            raise UnauthenticatedError(
                "unauthenticated", "Send 'Authorization: Bearer <super-admin token>'."
            )
        found = admin("api:authenticate").authenticate(credentials.credentials)
        if found is None:
            raise UnauthenticatedError(
                "unauthenticated", "The super-admin token is invalid or was revoked."
            )
        return admin(f"admin:{found.email}")

    Admin = Annotated[TenantAdministration, Depends(acting_admin)]

    # tenants --------------------------------------------------------------------------

    @router.get("/tenants", responses=_READ)
    def list_tenants(service: Admin) -> list[TenantOut]:
        """Every registered tenant, by slug."""
        return [_tenant_out(info) for info in service.tenants()]

    @router.post("/tenants", status_code=status.HTTP_201_CREATED, responses=_CHANGE)
    def create_tenant(body: TenantIn, service: Admin) -> TenantOut:
        """Register a tenant and provision its data (schema or database), migrated to head."""
        return _tenant_out(service.create(body.slug, body.name, body.region))

    @router.get("/tenants/{slug}", responses=_LOOKUP)
    def get_tenant(slug: SlugPath, service: Admin) -> TenantOut:
        return _tenant_out(service.tenant(slug))

    @router.post("/tenants/{slug}/suspend", responses=_CHANGE)
    def suspend_tenant(
        slug: SlugPath, service: Admin, body: Annotated[SuspendIn | None, Body()] = None
    ) -> TenantOut:
        """Refuse the tenant's requests (403 ``tenant_suspended``) until it is reactivated;
        its data is kept. Suspending a suspended tenant changes nothing."""
        return _tenant_out(service.suspend(slug, body.reason if body else None))

    @router.post("/tenants/{slug}/reactivate", responses=_CHANGE)
    def reactivate_tenant(slug: SlugPath, service: Admin) -> TenantOut:
        """Serve a suspended tenant again."""
        return _tenant_out(service.reactivate(slug))

    @router.post("/tenants/{slug}/rename", responses=_CHANGE)
    def rename_tenant(slug: SlugPath, body: RenameIn, service: Admin) -> TenantOut:
        """Give the tenant a new slug (and so new subdomain); its data is kept."""
        return _tenant_out(service.rename(slug, body.slug))

    @router.post("/tenants/{slug}/clone", status_code=status.HTTP_201_CREATED, responses=_CHANGE)
    def clone_tenant(slug: SlugPath, body: CloneIn, service: Admin) -> TenantOut:
        """A new tenant with a copy of this one's data and plugins (not its domains).
        The template must be migrated to head (409 ``template_not_migrated``)."""
        return _tenant_out(service.clone(slug, body.slug, body.name, body.region))

    # plugins --------------------------------------------------------------------------

    @router.get("/plugins", responses=_READ)
    def list_plugins(service: Admin) -> list[PluginOut]:
        """The plugin catalogue."""
        return [PluginOut(id=i, name=n, version=v) for i, n, v in service.plugins()]

    @router.put("/plugins/{plugin_id}", responses=_CHANGE)
    def put_plugin(plugin_id: PluginIdPath, body: PluginIn, service: Admin) -> PluginOut:
        """Put a plugin in the catalogue, or update its name and version."""
        service.add_plugin(plugin_id, body.name, body.version)
        return PluginOut(id=plugin_id, name=body.name, version=body.version)

    @router.put("/tenants/{slug}/plugins/{plugin_id}", responses=_CHANGE)
    def set_tenant_plugin(
        slug: SlugPath, plugin_id: PluginIdPath, body: TenantPluginIn, service: Admin
    ) -> TenantOut:
        """Enable (installing it when new) or disable a catalogue plugin for the tenant."""
        return _tenant_out(
            service.set_plugin(
                slug, plugin_id, enabled=body.enabled, configuration=body.configuration
            )
        )

    # domains --------------------------------------------------------------------------

    @router.post("/tenants/{slug}/domains", responses=_CHANGE)
    def add_domain(slug: SlugPath, body: DomainIn, service: Admin) -> TenantOut:
        """Serve ``domain`` as the tenant (a domain serves one tenant: 409 if another has it)."""
        return _tenant_out(service.add_domain(slug, body.domain, primary=body.primary))

    @router.delete("/domains/{domain}", status_code=status.HTTP_204_NO_CONTENT, responses=_CHANGE)
    def remove_domain(domain: DomainPath, service: Admin) -> Response:
        """Stop serving ``domain``."""
        service.remove_domain(domain)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    # super admins ---------------------------------------------------------------------

    @router.get("/super-admins", responses=_READ)
    def list_super_admins(service: Admin) -> list[SuperAdminOut]:
        return [
            SuperAdminOut(
                email=a.email, external_id=a.external_id, has_token=a.has_token,
                created_at=a.created_at,
            )
            for a in service.super_admins()
        ]  # fmt: skip

    @router.post("/super-admins", status_code=status.HTTP_201_CREATED, responses=_CHANGE)
    def add_super_admin(body: SuperAdminIn, service: Admin) -> AdminTokenOut:
        """Add an operator with access to every tenant; the answer holds their API token,
        shown this once."""
        token = service.add_super_admin(body.email, body.external_id)
        return AdminTokenOut(email=body.email.strip().lower(), token=token)

    @router.post("/super-admins/{email}/token", responses=_CHANGE)
    def rotate_admin_token(email: EmailPath, service: Admin) -> AdminTokenOut:
        """A new API token for the admin; the old one stops working at once."""
        return AdminTokenOut(email=email.strip().lower(), token=service.rotate_admin_token(email))

    @router.delete(
        "/super-admins/{email}", status_code=status.HTTP_204_NO_CONTENT, responses=_CHANGE
    )
    def remove_super_admin(email: EmailPath, service: Admin) -> Response:
        """Remove the admin; their token stops working at once (their own too)."""
        service.remove_super_admin(email)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    # audit ----------------------------------------------------------------------------

    @router.get("/audit", responses=_READ)
    def list_audit(
        service: Admin,
        tenant: Annotated[
            str | None,
            Query(pattern=SLUG_PATTERN, description="Only this tenant's changes"),
            AfterValidator(lambda v: None if v is None else _tenant_slug(v)),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> list[AuditOut]:
        """The newest changes first: who, what, when, to which tenant."""
        return [
            AuditOut(at=e.at, actor=e.actor, action=e.action, tenant=e.tenant, detail=e.detail)
            for e in service.audit(tenant, limit=limit)
        ]

    return router
