"""Shared notifications feature module: table mixins, written once for every db lib.

The use cases live in ``notifications.service`` and the routes in
``notifications.router`` (the ``api`` extra: ``notifications[api]``); they are not imported
here, so a db lib importing the tables loads neither FastAPI nor api_kit.
"""

from notifications.tables import NotificationTable, UserNotificationTable

__all__ = ["NotificationTable", "UserNotificationTable"]
