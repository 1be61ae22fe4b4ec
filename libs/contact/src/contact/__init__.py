"""Shared contact feature module: table mixins, written once for every db lib.

The use cases live in ``contact.service`` and the routes in ``contact.router`` (the ``api``
extra: ``contact[api]``); they are not imported here, so a db lib importing the tables
loads neither FastAPI nor api_kit.
"""

from contact.tables import ContactMessageStatus, ContactMessageTable

__all__ = ["ContactMessageStatus", "ContactMessageTable"]
