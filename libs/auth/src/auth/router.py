"""Auth routes: register, log in/out, current user, profile, providers, roles."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from api_kit import IdPath, problems
from auth.dependencies import AdminDep, AuthServiceDep, BearerDep, CurrentUserDep
from auth.schemas import (
    LoginIn,
    ProfileIn,
    ProfileOut,
    ProviderIn,
    ProviderOut,
    RegisterIn,
    RoleIn,
    TokenOut,
    UserOut,
)
from auth.service import CurrentUser

router = APIRouter(prefix="/auth", tags=["auth"])


def _user_out(user: CurrentUser) -> UserOut:
    return UserOut(id=user.id, email=user.email, username=user.username, roles=sorted(user.roles))


@router.post("/register", status_code=status.HTTP_201_CREATED)
async def register(body: RegisterIn, service: AuthServiceDep) -> UserOut:
    return _user_out(await service.register(body.email, body.password, body.username))


@router.post(
    "/login",
    responses=problems(401, 429, _401="Wrong email or password", _429="Too many failed logins"),
)
async def login(body: LoginIn, request: Request, service: AuthServiceDep) -> TokenOut:
    # Failed logins are counted per account and per client address (429 + Retry-After past
    # AUTH_LOGIN_MAX_FAILURES_*). The address is the ASGI client: behind a proxy, uvicorn's
    # --proxy-headers/--forwarded-allow-ips make it the forwarded one.
    address = request.client.host if request.client else None
    issued = await service.login(body.email, body.password, address=address)
    return TokenOut(access_token=issued.token, expires_at=issued.expires_at)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(user: CurrentUserDep, credentials: BearerDep, service: AuthServiceDep) -> Response:
    assert credentials is not None  # current_user admitted the request
    await service.logout(credentials.credentials)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me")
async def me(user: CurrentUserDep) -> UserOut:
    return _user_out(user)


@router.get("/me/profile")
async def get_profile(user: CurrentUserDep, service: AuthServiceDep) -> ProfileOut | None:
    profile = await service.get_profile(user.id)
    return ProfileOut.model_validate(profile, from_attributes=True) if profile else None


@router.put("/me/profile")
async def put_profile(body: ProfileIn, user: CurrentUserDep, service: AuthServiceDep) -> ProfileOut:
    profile = await service.put_profile(user.id, body.model_dump())
    return ProfileOut.model_validate(profile, from_attributes=True)


@router.get("/me/providers")
async def list_providers(user: CurrentUserDep, service: AuthServiceDep) -> list[ProviderOut]:
    links = await service.list_providers(user.id)
    return [ProviderOut.model_validate(link, from_attributes=True) for link in links]


@router.post("/me/providers", status_code=status.HTTP_201_CREATED)
async def link_provider(
    body: ProviderIn, user: CurrentUserDep, service: AuthServiceDep
) -> ProviderOut:
    link = await service.link_provider(user.id, body.provider, body.provider_user_id, body.email)
    return ProviderOut.model_validate(link, from_attributes=True)


@router.delete("/me/providers/{link_id}", status_code=status.HTTP_204_NO_CONTENT)
async def unlink_provider(
    link_id: IdPath, user: CurrentUserDep, service: AuthServiceDep
) -> Response:
    await service.unlink_provider(user.id, link_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/users/{user_id}/roles", status_code=status.HTTP_204_NO_CONTENT)
async def grant_role(
    user_id: IdPath, body: RoleIn, admin: AdminDep, service: AuthServiceDep
) -> Response:
    await service.grant_role(user_id, body.role)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/users/{user_id}/roles/{role}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_role(
    user_id: IdPath, role: str, admin: AdminDep, service: AuthServiceDep
) -> Response:
    await service.revoke_role(user_id, role)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
