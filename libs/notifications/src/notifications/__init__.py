"""Shared notifications feature module: table mixins, written once for every db lib."""

from notifications.tables import NotificationTable, UserNotificationTable

__all__ = ["NotificationTable", "UserNotificationTable"]
