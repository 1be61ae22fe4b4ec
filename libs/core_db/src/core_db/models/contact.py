"""The contact models of core_db, composed from the mixins in ``contact.tables``."""

from __future__ import annotations

from contact.tables import ContactMessageTable
from core_db.models.base import Base


class ContactMessage(ContactMessageTable, Base):
    pass
