"""bibikos-only gym models: members, scheduled classes and bookings.

Relationships load with ``lazy="raise"``: under an AsyncSession an implicit lazy load
would fail anyway, so ask for them with ``selectinload``/``joinedload``. Child rows are
removed by the database (``ON DELETE CASCADE``), hence ``passive_deletes=True``.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Integer,
    String,
    Text,
    UniqueConstraint,
    column,
    func,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from bibikos_db.models.base import Base


class MembershipType(enum.StrEnum):
    """The tier a gym member pays for."""

    BASIC = "basic"
    PREMIUM = "premium"
    VIP = "vip"


class BookingStatus(enum.StrEnum):
    """Whether a booking still holds a place in its class."""

    BOOKED = "booked"
    CANCELLED = "cancelled"


class GymMember(Base):
    """A user's gym membership; at most one per user."""

    __tablename__ = "gym_members"
    __table_args__: tuple[Any, ...] = (
        CheckConstraint(
            column("membership_type").in_([m.value for m in MembershipType]),
            name="membership_type_valid",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("auth_users.id", ondelete="CASCADE"),
        unique=True,
        nullable=False,
    )
    membership_type: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default=MembershipType.BASIC.value
    )
    joined_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=true())

    bookings: Mapped[list[Booking]] = relationship(
        back_populates="member", lazy="raise", passive_deletes=True
    )


class GymClass(Base):
    """One scheduled session of a class, with a fixed number of places."""

    __tablename__ = "gym_classes"
    __table_args__: tuple[Any, ...] = (
        CheckConstraint("capacity > 0", name="capacity_positive"),
        CheckConstraint("ends_at > starts_at", name="ends_after_start"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    instructor: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Indexed for the timetable: classes in a date range.
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True, nullable=False)
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    capacity: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    bookings: Mapped[list[Booking]] = relationship(
        back_populates="gym_class", lazy="raise", passive_deletes=True
    )


class Booking(Base):
    """A member's place in a class; one per (class, member), cancelled rather than deleted."""

    __tablename__ = "bookings"
    __table_args__: tuple[Any, ...] = (
        CheckConstraint(
            column("status").in_([s.value for s in BookingStatus]), name="status_valid"
        ),
        CheckConstraint(
            "cancelled_at IS NULL OR status = 'cancelled'", name="cancelled_at_when_cancelled"
        ),
        # Leading class_id also serves "bookings of a class" (and capacity counts).
        UniqueConstraint("class_id", "member_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    class_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("gym_classes.id", ondelete="CASCADE"), nullable=False
    )
    member_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("gym_members.id", ondelete="CASCADE"),
        index=True,
        nullable=False,
    )
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default=BookingStatus.BOOKED.value
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    gym_class: Mapped[GymClass] = relationship(back_populates="bookings", lazy="raise")
    member: Mapped[GymMember] = relationship(back_populates="bookings", lazy="raise")
