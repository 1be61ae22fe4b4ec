"""Auth use cases, written against the ``Database`` protocol only."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from auth.emails import normalize_email
from auth.passwords import hash_password, verify_and_update
from auth.tables import (
    AuthSessionTable,
    AuthUserTable,
    LoginFailureTable,
    ProviderTable,
    RoleTable,
    UserProfileTable,
    UserRoleTable,
)
from auth.throttle import LoginThrottle, LoginThrottleSettings
from db_shared import Database, NotFoundError, transact
from db_shared.errors import UnauthenticatedError

SESSION_TTL = timedelta(days=14)
DEFAULT_ROLE = "user"


def token_digest(token: str) -> str:
    """Sessions store only this digest: a leaked table yields no usable token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class CurrentUser:
    id: int
    email: str
    username: str | None
    roles: frozenset[str]

    def has_role(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime


class AuthService:
    def __init__(self, db: Database, throttle: LoginThrottleSettings | None = None) -> None:
        self.db = db
        self._throttle_settings = throttle
        self.User = db.model(AuthUserTable)
        self.Session = db.model(AuthSessionTable)
        self.Role = db.model(RoleTable)
        self.UserRole = db.model(UserRoleTable)
        self.Profile = db.model(UserProfileTable)
        self.Provider = db.model(ProviderTable)

    # registration and sessions -------------------------------------------------------

    async def register(self, email: str, password: str, username: str | None = None) -> CurrentUser:
        password_hash = await hash_password(password)

        async def work(s: AsyncSession) -> CurrentUser:
            user = self.User(
                email=normalize_email(email), username=username, password_hash=password_hash
            )
            s.add(user)
            await s.flush()
            await self._grant(s, user.id, DEFAULT_ROLE)
            return CurrentUser(user.id, user.email, user.username, frozenset({DEFAULT_ROLE}))

        return await transact(self.db, work)

    @property
    def throttle(self) -> LoginThrottle:
        """Failed-login counters (settings read from the environment unless given)."""
        settings = self._throttle_settings or LoginThrottleSettings()
        return LoginThrottle(self.db.model(LoginFailureTable), settings)

    async def login(self, email: str, password: str, *, address: str | None = None) -> IssuedToken:
        """A session token for a correct email and password.

        Every attempt counts against the account and ``address`` (the client host) before
        the password is checked; past a limit it raises ``RateLimitedError`` whatever the
        password (see ``auth.throttle``). A correct password whose hash was made with other
        parameters than today's gets a new hash, stored with the session.
        """
        email = normalize_email(email)
        throttle = self.throttle
        async with self.db.session() as s:
            refused = await throttle.take(s, email, address)
            user = (
                None
                if refused
                else await s.scalar(select(self.User).where(self.User.email == email))
            )
        if refused is not None:
            raise refused
        valid, new_hash = await verify_and_update(password, user.password_hash if user else None)
        if user is None or not valid or not user.is_active:
            raise UnauthenticatedError("invalid_credentials", "Wrong email or password.")
        token = secrets.token_urlsafe(32)
        expires_at = datetime.now(UTC) + SESSION_TTL
        values: dict[str, Any] = {"last_login_at": func.now()}
        if new_hash is not None:
            values["password_hash"] = new_hash
        async with self.db.session() as s:
            s.add(
                self.Session(user_id=user.id, token_hash=token_digest(token), expires_at=expires_at)
            )
            await s.execute(update(self.User).where(self.User.id == user.id).values(**values))
            await throttle.succeeded(s, email, address)
        return IssuedToken(token, expires_at)

    async def logout(self, token: str) -> None:
        async with self.db.session() as s:
            await s.execute(
                update(self.Session)
                .where(
                    self.Session.token_hash == token_digest(token),
                    self.Session.revoked_at.is_(None),
                )
                .values(revoked_at=func.now())
            )

    async def user_for_token(self, token: str) -> CurrentUser | None:
        """The active user behind a live session token, with roles, in one query."""
        U, S, UR, R = self.User, self.Session, self.UserRole, self.Role
        stmt = (
            select(U.id, U.email, U.username, func.array_remove(func.array_agg(R.name), None))
            .select_from(S)
            .join(U, U.id == S.user_id)
            .outerjoin(UR, UR.user_id == U.id)
            .outerjoin(R, R.id == UR.role_id)
            .where(
                S.token_hash == token_digest(token),
                S.revoked_at.is_(None),
                S.expires_at > func.now(),
                U.is_active.is_(True),
            )
            .group_by(U.id)
        )
        async with self.db.session() as s:
            row = (await s.execute(stmt)).first()
        if row is None:
            return None
        return CurrentUser(row[0], row[1], row[2], frozenset(row[3] or ()))

    # roles ---------------------------------------------------------------------------

    async def _grant(self, s: AsyncSession, user_id: int, role: str) -> None:
        await s.execute(
            insert(self.Role).values(name=role).on_conflict_do_nothing(index_elements=["name"])
        )
        role_id = await s.scalar(select(self.Role.id).where(self.Role.name == role))
        await s.execute(
            insert(self.UserRole).values(user_id=user_id, role_id=role_id).on_conflict_do_nothing()
        )

    async def grant_role(self, user_id: int, role: str) -> None:
        async def work(s: AsyncSession) -> None:
            if await s.get(self.User, user_id) is None:
                raise NotFoundError("user", user_id)
            await self._grant(s, user_id, role)

        await transact(self.db, work)

    async def revoke_role(self, user_id: int, role: str) -> None:
        async with self.db.session() as s:
            role_id = await s.scalar(select(self.Role.id).where(self.Role.name == role))
            if role_id is None:
                raise NotFoundError("role", role)
            result: CursorResult[Any] = await s.execute(  # type: ignore[assignment]
                delete(self.UserRole).where(
                    self.UserRole.user_id == user_id, self.UserRole.role_id == role_id
                )
            )
            if result.rowcount == 0:
                raise NotFoundError("role assignment", f"{user_id}:{role}")

    # profile -------------------------------------------------------------------------

    async def get_profile(self, user_id: int) -> UserProfileTable | None:
        async with self.db.session() as s:
            return await s.scalar(select(self.Profile).where(self.Profile.user_id == user_id))

    async def put_profile(self, user_id: int, values: dict[str, str | None]) -> UserProfileTable:
        stmt = (
            insert(self.Profile)
            .values(user_id=user_id, **values)
            .on_conflict_do_update(
                index_elements=["user_id"], set_={**values, "updated_at": func.now()}
            )
            .returning(self.Profile)
        )
        async with self.db.session() as s:
            profile: UserProfileTable = (await s.scalars(stmt)).one()
            return profile

    # providers -----------------------------------------------------------------------

    async def link_provider(
        self, user_id: int, provider: str, provider_user_id: str, email: str | None
    ) -> ProviderTable:
        async with self.db.session() as s:
            link = self.Provider(
                user_id=user_id, provider=provider, provider_user_id=provider_user_id, email=email
            )
            s.add(link)
            await s.flush()
            await s.refresh(link)
            return link

    async def list_providers(self, user_id: int) -> list[ProviderTable]:
        async with self.db.session() as s:
            rows = await s.scalars(
                select(self.Provider)
                .where(self.Provider.user_id == user_id)
                .order_by(self.Provider.id)
            )
            return list(rows)

    async def unlink_provider(self, user_id: int, link_id: int) -> None:
        async with self.db.session() as s:
            link = await s.get(self.Provider, link_id)
            if link is None or link.user_id != user_id:
                raise NotFoundError("provider link", link_id)
            await s.delete(link)
