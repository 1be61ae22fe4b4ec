"""FastAPI dependencies: the current user from a bearer token, and role checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api_kit import DatabaseDep, get_database, uses_database
from auth.service import AuthService, CurrentUser
from db_shared.errors import ForbiddenError, UnauthenticatedError

_bearer = HTTPBearer(auto_error=False, description="Session token from POST /auth/login")


async def get_auth_service(db: DatabaseDep) -> AuthService:
    return AuthService(db)


AuthServiceDep = Annotated[AuthService, Depends(get_auth_service)]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


@uses_database
async def current_user(request: Request, credentials: BearerDep) -> CurrentUser:
    # The database is looked up here rather than declared (``AuthServiceDep``): two
    # dependency levels fewer for FastAPI to solve on every authenticated request
    # (bench/current_user.py); ``uses_database`` keeps its errors in the OpenAPI document.
    if credentials is None or len(credentials.credentials) > 256:
        raise UnauthenticatedError("unauthenticated", "Send 'Authorization: Bearer <token>'.")
    service = AuthService(await get_database(request))
    user = await service.user_for_token(credentials.credentials)
    if user is None:
        raise UnauthenticatedError("unauthenticated", "The session token is invalid or expired.")
    return user


CurrentUserDep = Annotated[CurrentUser, Depends(current_user)]


def require_role(role: str) -> Callable[[CurrentUser], Awaitable[CurrentUser]]:
    """A dependency admitting only users holding ``role`` (403 otherwise)."""

    async def check(user: CurrentUserDep) -> CurrentUser:
        if not user.has_role(role):
            raise ForbiddenError("forbidden", f"This needs the '{role}' role.")
        return user

    return check


AdminDep = Annotated[CurrentUser, Depends(require_role("admin"))]
