"""Development seed data for auth tables, shared by every db lib's ``seed``."""

from __future__ import annotations

import os

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from auth.emails import normalize_email
from auth.tables import AuthUserTable, RoleTable, UserRoleTable

ROLES = {"admin": "Full access, including contact messages", "user": "A signed-up user"}
ADMIN_EMAIL_VARIABLE = "SEED_ADMIN_EMAIL"


def seed_auth(
    session: Session,
    user: type[AuthUserTable],
    role: type[RoleTable],
    user_role: type[UserRoleTable],
) -> str | None:
    """Create the roles; grant admin to ``$SEED_ADMIN_EMAIL`` if that user exists.

    Returns a line for the operator when the admin grant could not be made.
    """
    session.execute(
        insert(role)
        .values([{"name": n, "description": d} for n, d in ROLES.items()])
        .on_conflict_do_nothing(index_elements=["name"])
    )
    email = normalize_email(os.environ.get(ADMIN_EMAIL_VARIABLE, "").strip())
    if not email:
        return None
    user_id = session.scalar(select(user.id).where(user.email == email))
    if user_id is None:
        return f"{ADMIN_EMAIL_VARIABLE}={email}: no such user yet; register first, then seed again."
    admin_id = session.scalar(select(role.id).where(role.name == "admin"))
    session.execute(
        insert(user_role).values(user_id=user_id, role_id=admin_id).on_conflict_do_nothing()
    )
    return None
