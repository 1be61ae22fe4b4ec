"""The auth models of core_db, composed from the mixins in ``auth.tables``."""

from __future__ import annotations

from auth.tables import (
    AuthSessionTable,
    AuthUserTable,
    LoginFailureTable,
    ProviderTable,
    RoleTable,
    UserProfileTable,
    UserRoleTable,
    WebhookEventTable,
)
from core_db.models.base import Base


class AuthUser(AuthUserTable, Base):
    pass


class UserProfile(UserProfileTable, Base):
    pass


class Provider(ProviderTable, Base):
    pass


class Role(RoleTable, Base):
    pass


class UserRole(UserRoleTable, Base):
    pass


class AuthSession(AuthSessionTable, Base):
    pass


class WebhookEvent(WebhookEventTable, Base):
    pass


class LoginFailure(LoginFailureTable, Base):
    pass
