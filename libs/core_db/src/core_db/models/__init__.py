"""Every core_db model, imported in one place so the mappers and ``metadata`` see all tables.

Import this package (Alembic env, app, tests), not a single model module.
"""

from __future__ import annotations

from core_db.models.auth import AuthSession, AuthUser, Provider, Role, UserProfile, UserRole
from core_db.models.base import Base
from core_db.models.contact import ContactMessage
from core_db.models.notifications import Notification, UserNotification
from core_db.models.payments import PaymentCustomer, Price, Product, Subscription

metadata = Base.metadata

__all__ = [
    "AuthSession",
    "AuthUser",
    "Base",
    "ContactMessage",
    "Notification",
    "PaymentCustomer",
    "Price",
    "Product",
    "Provider",
    "Role",
    "Subscription",
    "UserNotification",
    "UserProfile",
    "UserRole",
    "metadata",
]
