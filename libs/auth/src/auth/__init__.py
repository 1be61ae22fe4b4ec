"""Shared auth feature module: table mixins, written once for every db lib."""

from auth.tables import (
    AuthSessionTable,
    AuthUserTable,
    ProviderTable,
    RoleTable,
    UserProfileTable,
    UserRoleTable,
)

__all__ = [
    "AuthSessionTable",
    "AuthUserTable",
    "ProviderTable",
    "RoleTable",
    "UserProfileTable",
    "UserRoleTable",
]
