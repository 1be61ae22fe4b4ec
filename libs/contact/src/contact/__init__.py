"""Shared contact feature module: table mixins, written once for every db lib."""

from contact.tables import ContactMessageStatus, ContactMessageTable

__all__ = ["ContactMessageStatus", "ContactMessageTable"]
