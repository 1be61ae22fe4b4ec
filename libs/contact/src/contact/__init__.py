"""Shared contact feature module: table mixins, written once for every db lib.

The use cases live in ``contact.service`` and the routes in ``contact.router``; they are
not re-exported here, so a db lib importing the tables loads neither FastAPI nor api_kit.
"""

from contact.tables import ContactMessageStatus, ContactMessageTable

__all__ = ["ContactMessageStatus", "ContactMessageTable"]
