"""Identity sync webhook: an identity provider tells each tenant about its users.

Requests are signed the Standard Webhooks way (https://www.standardwebhooks.com/), with the
``standardwebhooks`` package: ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` under
``AUTH_WEBHOOK_SECRET`` (``whsec_<base64>``, or any other string used as raw bytes).
Signing the id and the time with the body is what stops replays: a captured request is
refused once its timestamp is more than five minutes off, and within those minutes its id
has been seen.

Each tenant remembers the ids it received (``auth_webhook_events``): a second delivery of
one answers 200 and changes nothing. The newest applied event of an external user is its
state: an older event (by ``occurred_at``, else the signed timestamp) is recorded and
ignored, so a late ``identity.created`` never brings back a deleted user.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks import Webhook, WebhookVerificationError

from api_kit import AwareDatetime, DatabaseDep, problems, tenant_exempt
from auth.schemas import Email
from auth.tables import AuthSessionTable, AuthUserTable, ProviderTable, WebhookEventTable
from db_shared import Database, TenantDirectory, transact
from db_shared.errors import (
    ConfigurationError,
    InvalidInputError,
    ResourceNotFoundError,
    UnauthenticatedError,
)
from db_shared.tenancy import (
    UnknownTenantError,
    current_tenant_or_none,
    tenant_context,
    validate_tenant_slug,
)

PROVIDER = "identity"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"  # noqa: S105  (the scheme's prefix, not a secret)
TOLERANCE = timedelta(minutes=5)  # the window the standardwebhooks package enforces too
MAX_ID_LENGTH = 255
MAX_SIGNATURE_LENGTH = 2000  # several space-separated signatures while a secret rotates
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


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

    # The same id as the webhook-id header.
    id: Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
    type: IdentityEventType
    tenant_id: Annotated[str, Field(min_length=1, max_length=64)]
    # When it happened at the provider; orders events (default: the signed timestamp).
    occurred_at: AwareDatetime | None = None
    data: IdentityData


def _webhook(secret: str) -> Webhook:
    """``whsec_<base64>`` is decoded; any other secret is used as its UTF-8 bytes."""
    try:
        if secret.startswith(SECRET_PREFIX):
            return Webhook(secret)
        return Webhook(secret.encode())
    except Exception as exc:  # binascii.Error, EmptyWebhookSecretError
        raise ConfigurationError(
            "AUTH_WEBHOOK_SECRET is not a usable secret: whsec_ must be followed by base64"
        ) from exc


def sign(secret: str, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers a sender adds to ``body`` (tests and senders in Python use it)."""
    when = datetime.fromtimestamp(timestamp, UTC)
    return {
        ID_HEADER: event_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: _webhook(secret).sign(event_id, when, body.decode()),
    }


def _bad_signature(detail: str = "") -> UnauthenticatedError:
    return UnauthenticatedError(
        "bad_signature",
        detail
        or f"Missing or wrong {SIGNATURE_HEADER} (Standard Webhooks: "
        f'v1,<base64 HMAC-SHA256 of "{{{ID_HEADER}}}.{{{TIMESTAMP_HEADER}}}.{{body}}">).',
    )


def _timestamp_refused() -> UnauthenticatedError:
    minutes = int(TOLERANCE.total_seconds() // 60)
    return UnauthenticatedError(
        "timestamp_outside_tolerance",
        f"{TIMESTAMP_HEADER} is more than {minutes} minutes from this server's clock: sign each "
        "delivery with the current time.",
    )


def verify(secret: SecretStr | None, body: bytes, headers: dict[str, str]) -> tuple[str, datetime]:
    """The verified event id and signed time of a request.

    Raises ``ResourceNotFoundError`` when no secret is configured (the webhook is off) and
    ``UnauthenticatedError`` when the signature or its timestamp is refused.
    """
    if secret is None:
        # Disabled rather than failing: a 5xx would make senders retry forever.
        raise ResourceNotFoundError(
            "webhook_disabled", "Set AUTH_WEBHOOK_SECRET to accept identity events."
        )
    event_id = headers.get(ID_HEADER, "")
    stamp = headers.get(TIMESTAMP_HEADER, "")
    signatures = headers.get(SIGNATURE_HEADER, "")
    if not event_id or not stamp or not signatures:
        raise _bad_signature()
    if len(event_id) > MAX_ID_LENGTH or len(signatures) > MAX_SIGNATURE_LENGTH:
        raise _bad_signature()
    if not _TIMESTAMP.fullmatch(stamp):
        raise _bad_signature(f"{TIMESTAMP_HEADER} must be Unix time in whole seconds.")
    signed_at = datetime.fromtimestamp(int(stamp), UTC)
    if abs(datetime.now(UTC) - signed_at) > TOLERANCE:
        raise _timestamp_refused()
    try:
        _webhook(secret.get_secret_value()).verify(body, headers, json_parse=False)
    except WebhookVerificationError as exc:
        if "timestamp" in str(exc):  # crossed the edge of the window since the check above
            raise _timestamp_refused() from exc
        raise _bad_signature() from exc
    except (ValueError, UnicodeDecodeError) as exc:  # malformed signature list, not UTF-8
        raise _bad_signature() from exc
    return event_id, signed_at


def _supersedes(
    event_type: IdentityEventType,
    when: datetime,
    latest: tuple[datetime, str] | None,
) -> bool:
    """Whether an event at ``when`` may change the state the ``latest`` applied event left.

    Older events never do; at the very same instant a delete stays a delete.
    """
    if latest is None:
        return True
    latest_at, latest_type = latest
    if when != latest_at:
        return when > latest_at
    return not (
        latest_type == IdentityEventType.DELETED and event_type is not IdentityEventType.DELETED
    )


async def apply_identity_event(
    db: Database, event: IdentityEvent, when: datetime
) -> dict[str, Any]:
    """Apply ``event`` (which happened at ``when``) to the user behind it, once, in order."""
    User, Link, Session, Event = (
        db.model(AuthUserTable),
        db.model(ProviderTable),
        db.model(AuthSessionTable),
        db.model(WebhookEventTable),
    )
    data = event.data
    if event.type is not IdentityEventType.DELETED and data.email is None:
        raise InvalidInputError(
            "email_required", "identity.created/updated events need data.email."
        )
    tenant = current_tenant_or_none()
    lock_key = f"auth.identity:{tenant.slug if tenant else '-'}:{data.id}"

    async def work(s: AsyncSession) -> dict[str, Any]:
        # One external user's events apply one at a time (its user row may not exist yet,
        # so there is no row to lock): a transaction-scoped advisory lock on its id.
        await s.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(lock_key, 0))))
        link = await s.scalar(
            select(Link)
            .where(Link.provider == PROVIDER, Link.provider_user_id == data.id)
            .with_for_update()
        )
        user = await s.get(User, link.user_id, with_for_update=True) if link else None
        if await s.scalar(select(Event.id).where(Event.event_id == event.id)) is not None:
            return {"status": "duplicate", "user_id": user.id if user else None}
        latest = (
            await s.execute(
                select(Event.occurred_at, Event.event_type)
                .where(
                    Event.provider == PROVIDER,
                    Event.provider_user_id == data.id,
                    Event.applied.is_(True),
                )
                .order_by(Event.occurred_at.desc(), Event.id.desc())
                .limit(1)
            )
        ).first()
        applies = _supersedes(event.type, when, (latest[0], latest[1]) if latest else None)
        s.add(
            Event(
                event_id=event.id,
                event_type=event.type.value,
                provider=PROVIDER,
                provider_user_id=data.id,
                occurred_at=when,
                applied=applies,
            )
        )
        if not applies:
            await s.flush()
            return {"status": "ignored_older", "user_id": user.id if user else None}
        if event.type is IdentityEventType.DELETED:
            if user is not None and user.is_active:
                user.is_active = False
                await s.execute(
                    update(Session)
                    .where(Session.user_id == user.id, Session.revoked_at.is_(None))
                    .values(revoked_at=func.now())
                )
            await s.flush()
            return {"status": "applied", "user_id": user.id if user else None}
        assert data.email is not None
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
            if getattr(user, name) != value:  # unchanged rows are not rewritten
                setattr(user, name, value)
        await s.flush()
        return {"status": "applied", "user_id": user.id}

    return await transact(db, work)


# The event names its tenant in the signed body, so no host or header routing applies.
router = tenant_exempt(APIRouter(prefix="/auth/webhooks", tags=["auth"]))


@router.post(
    "/identity",
    responses=problems(
        401,
        422,
        _401="`bad_signature` or `timestamp_outside_tolerance`",
        _422="Not an identity event",
    ),
)
async def identity_webhook(request: Request, db: DatabaseDep) -> dict[str, Any]:
    """Apply an identity event to its tenant (Standard Webhooks signature).

    200 ``applied``, ``duplicate`` (this ``webhook-id`` was seen: nothing changes) or
    ``ignored_older`` (an event that happened later was already applied); 401
    ``bad_signature`` or ``timestamp_outside_tolerance`` (more than 5 minutes off); 404
    unknown tenant; 422 not an identity event; 503 tenant database down.
    """
    body = await request.body()
    event_id, signed_at = verify(WebhookSettings().webhook_secret, body, dict(request.headers))
    try:
        event = IdentityEvent.model_validate(json.loads(body))
    except (ValueError, ValidationError) as exc:
        raise InvalidInputError(
            "invalid_event", "The event is not a valid identity event."
        ) from exc
    if event.id != event_id:
        raise InvalidInputError(
            "event_id_mismatch", f"The event's id must equal the {ID_HEADER} header."
        )
    when = event.occurred_at or signed_at
    if when > datetime.now(UTC) + TOLERANCE:
        raise InvalidInputError("invalid_event", "occurred_at lies in the future.")
    slug = validate_tenant_slug(event.tenant_id)
    with tenant_context(slug):
        if isinstance(db, TenantDirectory) and db.multi_tenant and not await db.tenant_exists(slug):
            raise UnknownTenantError(slug)
        return await apply_identity_event(db, event, when)
