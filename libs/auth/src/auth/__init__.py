"""Shared auth feature module: table mixins, written once for every db lib.

The use cases live in ``auth.service``, the routes in ``auth.router`` and
``auth.webhooks``, the request dependencies in ``auth.dependencies`` (all in the ``api``
extra: ``auth[api]``); they are not imported here, so a db lib importing the tables (or
``auth.seed``) loads neither FastAPI, api_kit nor pydantic.
"""

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
