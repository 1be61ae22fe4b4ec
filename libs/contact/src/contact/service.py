"""Contact use cases, written against the ``Database`` protocol only."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update

from contact.tables import ContactMessageStatus, ContactMessageTable
from db_shared import Database, NotFoundError
from db_shared.errors import ConflictError


@dataclass(frozen=True)
class Inbox:
    items: list[ContactMessageTable]
    total: int


class ContactService:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.Message = db.model(ContactMessageTable)

    async def submit(
        self, name: str, email: str, subject: str, message: str
    ) -> ContactMessageTable:
        """Store a message from the public form; it starts as ``new``."""
        async with self.db.session() as s:
            row = self.Message(name=name, email=email, subject=subject, message=message)
            s.add(row)
            await s.flush()
            return row

    async def inbox(self, status: ContactMessageStatus | None, *, limit: int, offset: int) -> Inbox:
        """Messages (optionally of one status), newest first, and how many there are."""
        M = self.Message
        where = () if status is None else (M.status == status.value,)
        async with self.db.read_session() as s:
            total = await s.scalar(select(func.count()).select_from(M).where(*where))
            rows = await s.scalars(
                select(M)
                .where(*where)
                .order_by(M.created_at.desc(), M.id.desc())
                .limit(limit)
                .offset(offset)
            )
            return Inbox(list(rows), total or 0)

    async def resolve(self, message_id: int, admin_id: int) -> ContactMessageTable:
        """Mark a new message resolved by ``admin_id``; a resolved one is a ``ConflictError``."""
        M = self.Message
        async with self.db.session() as s:
            # One conditional UPDATE: of two admins resolving at once, exactly one wins.
            resolved = await s.scalar(
                update(M)
                .where(M.id == message_id, M.status == ContactMessageStatus.NEW.value)
                .values(
                    status=ContactMessageStatus.RESOLVED.value,
                    resolved_at=func.now(),
                    resolved_by_id=admin_id,
                )
                .returning(M)
                .execution_options(synchronize_session=False)
            )
            if resolved is not None:
                return resolved
            current = await s.get(M, message_id)
        if current is None:
            raise NotFoundError("contact message", message_id)
        raise ConflictError(
            "already_resolved",
            f"Contact message {message_id} was already resolved at {current.resolved_at}.",
        )
