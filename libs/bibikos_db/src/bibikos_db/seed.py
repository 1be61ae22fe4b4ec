"""Development seed data: roles, a product with prices, tomorrow's gym class."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from auth.seed import seed_auth
from bibikos_db.models import AuthUser, GymClass, Price, Product, Role, UserRole
from payments.seed import seed_payments


def seed(session: Session) -> str | None:
    note = seed_auth(session, AuthUser, Role, UserRole)
    seed_payments(session, Product, Price)
    starts = datetime.combine(datetime.now(UTC).date() + timedelta(days=1), time(7), UTC)
    exists = session.scalar(
        select(GymClass.id).where(GymClass.name == "Morning yoga", GymClass.starts_at == starts)
    )
    if exists is None:
        session.add(
            GymClass(
                name="Morning yoga",
                instructor="Eleni",
                starts_at=starts,
                ends_at=starts + timedelta(hours=1),
                capacity=12,
            )
        )
    return note
