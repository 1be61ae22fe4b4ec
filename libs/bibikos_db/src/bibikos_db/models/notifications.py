"""The notifications models of bibikos_db, composed from the mixins in ``notifications.tables``."""

from __future__ import annotations

from bibikos_db.models.base import Base
from notifications.tables import NotificationTable, UserNotificationTable


class Notification(NotificationTable, Base):
    pass


class UserNotification(UserNotificationTable, Base):
    pass
