"""The contact models of bibikos_db, composed from the mixins in ``contact.tables``."""

from __future__ import annotations

from bibikos_db.models.base import Base
from contact.tables import ContactMessageTable


class ContactMessage(ContactMessageTable, Base):
    pass
