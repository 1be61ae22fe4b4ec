"""Notifications use cases, written against the ``Database`` protocol only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CursorResult,
    bindparam,
    func,
    literal,
    null,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import insert

from db_shared import Database, NotFoundError
from notifications.tables import NotificationTable, UserNotificationTable


@dataclass(frozen=True)
class Delivered:
    """A notification as one recipient sees it."""

    id: int
    type: str
    title: str
    body: str
    data: dict[str, Any] | None
    created_at: datetime


@dataclass(frozen=True)
class Unread:
    items: list[Delivered]
    total: int


class NotificationService:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.Notification = db.model(NotificationTable)
        self.UserNotification = db.model(UserNotificationTable)

    async def send(
        self,
        *,
        sender_id: int | None,
        type: str,
        title: str,
        body: str,
        data: dict[str, Any] | None,
        user_ids: Sequence[int],
    ) -> tuple[int, int]:
        """Write the notification and deliver it to every user in one transaction.

        Returns ``(notification id, recipients)``. An unknown user id fails the foreign key
        (``ForeignKeyViolationError``) and nothing is written.
        """
        recipients = sorted(set(user_ids))
        N, UN = self.Notification, self.UserNotification
        async with self.db.session() as s:
            # null(): SQL NULL, where a plain None would store the JSON value null.
            stored = data if data is not None else null()
            notification_id = (
                await s.execute(
                    insert(N)
                    .values(sender_id=sender_id, type=type, title=title, body=body, data=stored)
                    .returning(N.id)
                )
            ).scalar_one()
            # One INSERT ... SELECT unnest(array) however many recipients: one round trip,
            # one parameter, and the foreign key checks every id.
            ids = sql_cast(bindparam("user_ids", recipients), ARRAY(BigInteger))
            await s.execute(
                insert(UN).from_select(
                    ["user_id", "notification_id"],
                    select(func.unnest(ids), literal(notification_id, BigInteger)),
                )
            )
        return notification_id, len(recipients)

    async def unread(self, user_id: int, *, limit: int, offset: int) -> Unread:
        """The user's unread notifications, newest first, and how many there are in all."""
        N, UN = self.Notification, self.UserNotification
        mine = (UN.user_id == user_id, UN.is_read.is_(False))
        page = (
            select(N.id, N.type, N.title, N.body, N.data, N.created_at)
            .join(UN, UN.notification_id == N.id)
            .where(*mine)
            .order_by(N.created_at.desc(), N.id.desc())
            .limit(limit)
            .offset(offset)
        )
        async with self.db.read_session() as s:
            total = await s.scalar(select(func.count()).select_from(UN).where(*mine))
            rows = (await s.execute(page)).all()
        return Unread([Delivered(*row) for row in rows], total or 0)

    async def mark_read(self, user_id: int, notification_id: int) -> datetime:
        """Mark one delivery read; reading it again keeps the first ``read_at``."""
        UN = self.UserNotification
        async with self.db.session() as s:
            read_at = await s.scalar(
                update(UN)
                .where(UN.user_id == user_id, UN.notification_id == notification_id)
                .values(is_read=True, read_at=func.coalesce(UN.read_at, func.now()))
                .returning(UN.read_at)
                .execution_options(synchronize_session=False)
            )
        if read_at is None:
            raise NotFoundError("notification", notification_id)
        return read_at

    async def mark_all_read(self, user_id: int) -> int:
        """Mark every unread delivery of the user read; returns how many changed."""
        UN = self.UserNotification
        async with self.db.session() as s:
            result = cast(
                "CursorResult[Any]",
                await s.execute(
                    update(UN)
                    .where(UN.user_id == user_id, UN.is_read.is_(False))
                    .values(is_read=True, read_at=func.now())
                    .execution_options(synchronize_session=False)
                ),
            )
        return result.rowcount
