"""The notifications models of core_db, composed from the mixins in ``notifications.tables``."""

from __future__ import annotations

from core_db.models.base import Base
from notifications.tables import NotificationTable, UserNotificationTable


class Notification(NotificationTable, Base):
    pass


class UserNotification(UserNotificationTable, Base):
    pass
