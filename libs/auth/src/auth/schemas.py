"""Request and response bodies of the auth routes (strict: unknown fields are refused)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
)

from auth.emails import normalize_email


def _normalize_input(value: Any) -> Any:
    return normalize_email(value) if isinstance(value, str) else value


# Normalised before the syntax check (so compatibility forms of "@" or "." are seen as
# such) and again after it (the validator re-encodes the domain).
Email = Annotated[
    EmailStr,
    BeforeValidator(_normalize_input),
    Field(max_length=320),
    AfterValidator(normalize_email),
]
Password = Annotated[str, Field(min_length=8, max_length=128)]
Username = Annotated[
    str, StringConstraints(min_length=3, max_length=50, pattern=r"^[A-Za-z0-9_.-]+$")
]
RoleName = Annotated[
    str, StringConstraints(min_length=2, max_length=50, pattern=r"^[a-z][a-z0-9_-]*$")
]
ShortText = Annotated[str, StringConstraints(max_length=100)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class RegisterIn(Strict):
    email: Email
    password: Password
    username: Username | None = None


class LoginIn(Strict):
    email: Email
    password: Annotated[str, Field(min_length=1, max_length=128)]


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105  (the OAuth2 token type, not a secret)
    expires_at: datetime


class UserOut(BaseModel):
    id: int
    email: str
    username: str | None
    roles: list[str]


class ProfileIn(Strict):
    display_name: ShortText | None = None
    bio: Annotated[str, StringConstraints(max_length=2000)] | None = None
    avatar_url: Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://")] | None = (
        None
    )
    locale: (
        Annotated[
            str, StringConstraints(max_length=35, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
        ]
        | None
    ) = None
    timezone: (
        Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$")]
        | None
    ) = None


class ProfileOut(BaseModel):
    display_name: str | None
    bio: str | None
    avatar_url: str | None
    locale: str | None
    timezone: str | None


class ProviderIn(Strict):
    provider: Annotated[
        str, StringConstraints(min_length=2, max_length=50, pattern=r"^[a-z0-9_-]+$")
    ]
    provider_user_id: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    email: Email | None = None


class ProviderOut(BaseModel):
    id: int
    provider: str
    provider_user_id: str
    email: str | None
    linked_at: datetime


class RoleIn(Strict):
    role: RoleName
