"""Identity sync webhook: an identity provider tells each tenant about its users.

Events carry the tenant; the request is signed with HMAC-SHA256 over the raw body
(``X-Webhook-Signature: sha256=<hex>``) with ``AUTH_WEBHOOK_SECRET``. Applying an event is
an idempotent upsert keyed by the provider's user id, so a replay changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api_kit import DatabaseDep, ProblemError
from auth.schemas import Email
from auth.tables import AuthSessionTable, AuthUserTable, ProviderTable
from db_shared import Database, TenantDirectory, transact
from db_shared.tenancy import UnknownTenantError, tenant_context, validate_tenant_slug

PROVIDER = "identity"
SIGNATURE_HEADER = "X-Webhook-Signature"


class WebhookSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore")

    webhook_secret: SecretStr | None = None


class IdentityEventType(StrEnum):
    CREATED = "identity.created"
    UPDATED = "identity.updated"
    DELETED = "identity.deleted"


class IdentityData(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: Annotated[str, Field(min_length=1, max_length=255)]
    email: Email | None = None
    username: (
        Annotated[str, Field(min_length=3, max_length=50, pattern=r"^[A-Za-z0-9_.-]+$")] | None
    ) = None
    email_verified: bool = False


class IdentityEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: Annotated[str, Field(min_length=1, max_length=255)]
    type: IdentityEventType
    tenant_id: Annotated[str, Field(min_length=1, max_length=64)]
    occurred_at: datetime | None = None
    data: IdentityData


def signature(secret: str, body: bytes) -> str:
    """The header value a sender computes for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: SecretStr | None, body: bytes, given: str | None) -> None:
    if secret is None:
        # Disabled rather than failing: a 5xx would make senders retry forever.
        raise ProblemError(
            404, "webhook_disabled", "Set AUTH_WEBHOOK_SECRET to accept identity events."
        )
    expected = signature(secret.get_secret_value(), body)
    if not given or not hmac.compare_digest(expected, given.strip()):
        raise ProblemError(401, "bad_signature", f"Missing or wrong {SIGNATURE_HEADER}.")


async def apply_identity_event(db: Database, event: IdentityEvent) -> dict[str, Any]:
    """Upsert (or deactivate) the user behind ``event`` in the current tenant."""
    User, Link, Session = (
        db.model(AuthUserTable),
        db.model(ProviderTable),
        db.model(AuthSessionTable),
    )
    data = event.data

    async def work(s: AsyncSession) -> dict[str, Any]:
        link = await s.scalar(
            select(Link)
            .where(Link.provider == PROVIDER, Link.provider_user_id == data.id)
            .with_for_update()
        )
        user = await s.get(User, link.user_id, with_for_update=True) if link else None
        if event.type is IdentityEventType.DELETED:
            if user is not None and user.is_active:
                user.is_active = False
                await s.execute(
                    update(Session)
                    .where(Session.user_id == user.id, Session.revoked_at.is_(None))
                    .values(revoked_at=func.now())
                )
            return {"status": "applied", "user_id": user.id if user else None}
        if data.email is None:
            raise ProblemError(
                422, "email_required", "identity.created/updated events need data.email."
            )
        if user is None:
            user = await s.scalar(select(User).where(User.email == data.email).with_for_update())
            if user is None:
                user = User(
                    email=data.email, username=data.username, email_verified=data.email_verified
                )
                s.add(user)
                await s.flush()
            s.add(
                Link(user_id=user.id, provider=PROVIDER, provider_user_id=data.id, email=data.email)
            )
        changes = {"email": data.email, "email_verified": data.email_verified, "is_active": True}
        if data.username is not None:
            changes["username"] = data.username
        for name, value in changes.items():
            if getattr(user, name) != value:  # unchanged rows are not rewritten: replays are no-ops
                setattr(user, name, value)
        await s.flush()
        return {"status": "applied", "user_id": user.id}

    return await transact(db, work)


router = APIRouter(prefix="/auth/webhooks", tags=["auth"])


@router.post("/identity")
async def identity_webhook(
    request: Request,
    db: DatabaseDep,
    x_webhook_signature: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, Any]:
    """Apply an identity event to its tenant: 401 bad signature, 404 unknown tenant, 503 down."""
    body = await request.body()
    verify(WebhookSettings().webhook_secret, body, x_webhook_signature)
    try:
        event = IdentityEvent.model_validate(json.loads(body))
    except (ValueError, ValidationError) as exc:
        raise ProblemError(
            422, "invalid_event", "The event is not a valid identity event."
        ) from exc
    slug = validate_tenant_slug(event.tenant_id)
    with tenant_context(slug):
        if isinstance(db, TenantDirectory) and db.multi_tenant and not await db.tenant_exists(slug):
            raise UnknownTenantError(slug)
        return await apply_identity_event(db, event)
