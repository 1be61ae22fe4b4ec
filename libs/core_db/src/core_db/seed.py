"""Development seed data: roles, a product with prices. Safe to run repeatedly."""

from __future__ import annotations

from sqlalchemy.orm import Session

from auth.seed import seed_auth
from core_db.models import AuthUser, Price, Product, Role, UserRole
from payments.seed import seed_payments


def seed(session: Session) -> str | None:
    note = seed_auth(session, AuthUser, Role, UserRole)
    seed_payments(session, Product, Price)
    return note
