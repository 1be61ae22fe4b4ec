"""Notifications tables, defined once as declarative mixins.

A ``Notification`` is written once; ``UserNotification`` delivers it to each recipient
and tracks whether that recipient has read it. Each db lib composes these into its own
declarative base (``class Notification(NotificationTable, Base): pass``).

A Constraint belongs to one Table, so ``__table_args__`` is a ``declared_attr`` that
builds fresh objects for each db lib that composes the mixin.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from db_shared.tables import TableMixin


class NotificationTable(TableMixin):
    """A message sent to one or more users."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # Application-defined kind, e.g. "payment.failed"; clients switch on it.
    type: Mapped[str] = mapped_column(String(50), nullable=False)
    title: Mapped[str] = mapped_column(String(255), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    # NULL for system notifications, and kept (as NULL) when the sender is deleted.
    sender_id: Mapped[int | None] = mapped_column(
        BigInteger,
        ForeignKey("auth_users.id", ondelete="SET NULL"),
        index=True,
        nullable=True,
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class UserNotificationTable(TableMixin):
    """Delivery of a notification to one user, with its read state."""

    __tablename__ = "user_notifications"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("auth_users.id", ondelete="CASCADE"), nullable=False
    )
    notification_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("notifications.id", ondelete="CASCADE"),
        index=True,
        nullable=False,
    )
    is_read: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (
            # Also serves "all notifications of a user" through its leading column.
            UniqueConstraint("user_id", "notification_id"),
            # Unread counts and the unread list.
            Index(None, "user_id", "is_read"),
            CheckConstraint("read_at IS NULL OR is_read", name="read_at_when_read"),
        )


__all__ = ["NotificationTable", "UserNotificationTable"]
