"""Contact tables, defined once as declarative mixins.

Each db lib composes these into its own declarative base
(``class ContactMessage(ContactMessageTable, Base): pass``). The status is a String
column with a CHECK built from ``ContactMessageStatus``, not a native PostgreSQL ENUM.

A Constraint belongs to one Table, so ``__table_args__`` is a ``declared_attr`` that
builds fresh objects for each db lib that composes the mixin.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    String,
    Text,
    column,
    func,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from db_shared.tables import TableMixin


class ContactMessageStatus(enum.StrEnum):
    """Where a contact message stands in the support inbox."""

    NEW = "new"
    RESOLVED = "resolved"


class ContactMessageTable(TableMixin):
    """A message sent through the public contact form."""

    __tablename__ = "contact_messages"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    # As typed by the sender (who may not have an account), so not forced to lowercase.
    email: Mapped[str] = mapped_column(String(320), nullable=False)
    subject: Mapped[str] = mapped_column(String(255), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default=ContactMessageStatus.NEW.value
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Kept (as NULL) when the resolving admin's account is deleted.
    resolved_by_id: Mapped[int | None] = mapped_column(
        BigInteger,
        ForeignKey("auth_users.id", ondelete="SET NULL"),
        index=True,
        nullable=True,
    )

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (
            CheckConstraint(
                column("status").in_([s.value for s in ContactMessageStatus]),
                name="status_valid",
            ),
            CheckConstraint(
                "resolved_at IS NULL OR status = 'resolved'", name="resolved_at_when_resolved"
            ),
            # The inbox: messages by status, newest first.
            Index(None, "status", "created_at"),
        )


__all__ = ["ContactMessageStatus", "ContactMessageTable"]
