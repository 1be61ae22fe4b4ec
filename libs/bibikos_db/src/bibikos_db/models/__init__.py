"""Every bibikos_db model, imported in one place so the mappers and ``metadata`` see all tables.

Import this package (Alembic env, app, tests), not a single model module.
"""

from __future__ import annotations

from bibikos_db.models.auth import AuthSession, AuthUser, Provider, Role, UserProfile, UserRole
from bibikos_db.models.base import Base
from bibikos_db.models.contact import ContactMessage
from bibikos_db.models.gym import Booking, BookingStatus, GymClass, GymMember, MembershipType
from bibikos_db.models.notifications import Notification, UserNotification
from bibikos_db.models.payments import PaymentCustomer, Price, Product, Subscription

metadata = Base.metadata

__all__ = [
    "AuthSession",
    "AuthUser",
    "Base",
    "Booking",
    "BookingStatus",
    "ContactMessage",
    "GymClass",
    "GymMember",
    "MembershipType",
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
