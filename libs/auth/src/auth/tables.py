"""Auth tables, defined once as declarative mixins.

Each db lib composes these into its own declarative base
(``class AuthUser(AuthUserTable, Base): pass``), so core_db and bibikos_db share one
definition. Mixins carry no relationships: feature services query explicitly.

A Constraint belongs to one Table, so ``__table_args__`` is a ``declared_attr`` that
builds fresh objects for each db lib that composes the mixin.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    true,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from db_shared.tables import TableMixin


class AuthUserTable(TableMixin):
    """A person who can sign in, by password or through a linked provider."""

    __tablename__ = "auth_users"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # Stored lowercase (see the CHECK) so the unique constraint is case-insensitive.
    email: Mapped[str] = mapped_column(String(320), unique=True, nullable=False)
    username: Mapped[str | None] = mapped_column(String(50), unique=True, nullable=True)
    # NULL for users who only ever signed in through a provider.
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=true())
    email_verified: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (CheckConstraint("email = lower(email)", name="email_lowercase"),)


class UserProfileTable(TableMixin):
    """Public profile of a user; at most one per user."""

    __tablename__ = "user_profiles"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("auth_users.id", ondelete="CASCADE"),
        unique=True,
        nullable=False,
    )
    display_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    bio: Mapped[str | None] = mapped_column(Text, nullable=True)
    avatar_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    # BCP 47 tag (at most 35 characters), e.g. "en-GB".
    locale: Mapped[str | None] = mapped_column(String(35), nullable=True)
    # IANA zone name, e.g. "Europe/Athens".
    timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class ProviderTable(TableMixin):
    """An external identity (OAuth/OIDC account) linked to a user."""

    __tablename__ = "auth_providers"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("auth_users.id", ondelete="CASCADE"),
        index=True,
        nullable=False,
    )
    # Provider key such as "google" or "github".
    provider: Mapped[str] = mapped_column(String(50), nullable=False)
    provider_user_id: Mapped[str] = mapped_column(String(255), nullable=False)
    # Email as reported by the provider; may differ from the user's own.
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    linked_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (UniqueConstraint("provider", "provider_user_id"),)


class RoleTable(TableMixin):
    """A named set of permissions, such as ``admin``."""

    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True, nullable=False)
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class UserRoleTable(TableMixin):
    """Grants a role to a user; the pair is the primary key."""

    __tablename__ = "user_roles"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("auth_users.id", ondelete="CASCADE"), primary_key=True
    )
    # Deleting a role revokes it from everyone who held it.
    role_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    assigned_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class AuthSessionTable(TableMixin):
    """An opaque login session; only a hash of the token is stored."""

    __tablename__ = "auth_sessions"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("auth_users.id", ondelete="CASCADE"),
        index=True,
        nullable=False,
    )
    # Hex SHA-256 of the session token.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    # Indexed so a purge job can find expired sessions without a full scan.
    expires_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), index=True, nullable=False
    )
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebhookEventTable(TableMixin):
    """An identity event this tenant received, by the sender's event id.

    A replay of an id already here changes nothing. The newest applied event of an external
    user is its sync state: an event older than it is recorded (``applied`` false) and
    ignored, so a late or replayed ``identity.created`` never undoes an ``identity.deleted``.
    """

    __tablename__ = "auth_webhook_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # The sender's id (Standard Webhooks ``webhook-id``), unique in the tenant.
    event_id: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    event_type: Mapped[str] = mapped_column(String(50), nullable=False)
    # The external identity the event is about (``auth_providers`` has no row for it until
    # it is created, and keeps none if the first event is a delete).
    provider: Mapped[str] = mapped_column(String(50), nullable=False)
    provider_user_id: Mapped[str] = mapped_column(String(255), nullable=False)
    # When the event happened at the sender: its ``occurred_at``, else the signed timestamp.
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # False: older than the state already applied, so it was ignored.
    applied: Mapped[bool] = mapped_column(Boolean, nullable=False)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        # The newest event of an external user, in one index lookup.
        return (Index(None, "provider", "provider_user_id", "occurred_at"),)


class LoginFailureTable(TableMixin):
    """Failed logins counted per account (``kind='account'``, key: the normalized email) and
    per client address (``kind='address'``, key: the client host), in a fixed window.

    Kept in the database, not in one process's memory, so every worker process (and every
    server) sees the same counts. ``window_started_at`` is when the current window began;
    ``failures`` counts attempts in it (the service stops counting at its limit + 1).
    """

    __tablename__ = "auth_login_failures"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    # The normalized email (up to 320 characters) or the client address.
    key: Mapped[str] = mapped_column(String(320), primary_key=True)
    window_started_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    failures: Mapped[int] = mapped_column(Integer, nullable=False)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (
            CheckConstraint("kind IN ('account', 'address')", name="kind"),
            CheckConstraint("failures >= 0", name="failures_not_negative"),
            # A purge job finds expired windows without a full scan.
            Index(None, "window_started_at"),
        )


__all__ = [
    "AuthSessionTable",
    "AuthUserTable",
    "LoginFailureTable",
    "ProviderTable",
    "RoleTable",
    "UserProfileTable",
    "UserRoleTable",
    "WebhookEventTable",
]
