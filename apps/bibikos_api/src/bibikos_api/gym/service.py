"""Gym use cases: memberships, the class schedule and bookings that never overbook.

Sessions come from the ``Database`` protocol (the app's bound database); the models are
bibikos_db's own, since the gym exists only in that database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from api_kit.pagination import Page
from api_kit.types import MAX_DATETIME
from auth.service import CurrentUser
from bibikos_api.gym.schemas import BookingOut, ClassIn, ClassOut, MemberOut
from bibikos_db.models import (
    AuthUser,
    Booking,
    BookingStatus,
    GymClass,
    GymMember,
    MembershipType,
)
from db_shared import Database, transact
from db_shared.errors import ConflictError, ForbiddenError, ResourceNotFoundError

BOOKED = BookingStatus.BOOKED.value
CANCELLED = BookingStatus.CANCELLED.value


def _not_a_member() -> ForbiddenError:
    return ForbiddenError("not_a_member", "Join the gym first: POST /gym/members.")


def _class_not_found(class_id: int) -> ResourceNotFoundError:
    return ResourceNotFoundError("class_not_found", f"Gym class {class_id} does not exist.")


def _class_started(gym_class: GymClass) -> ConflictError:
    return ConflictError(
        "class_started",
        f"Gym class {gym_class.id} started at {gym_class.starts_at.isoformat()}; "
        "bookings can no longer change.",
    )


def _member_out(member: GymMember, email: str) -> MemberOut:
    return MemberOut(
        id=member.id,
        user_id=member.user_id,
        email=email,
        membership_type=MembershipType(member.membership_type),
        joined_at=member.joined_at,
        is_active=member.is_active,
    )


def _class_out(gym_class: GymClass, booked: int) -> ClassOut:
    return ClassOut(
        id=gym_class.id,
        name=gym_class.name,
        description=gym_class.description,
        instructor=gym_class.instructor,
        starts_at=gym_class.starts_at,
        ends_at=gym_class.ends_at,
        capacity=gym_class.capacity,
        booked=booked,
        remaining=max(gym_class.capacity - booked, 0),
    )


def _classes_with_counts() -> Select[GymClass, int]:
    booked = func.count(Booking.id).filter(Booking.status == BOOKED)
    return (
        select(GymClass, booked)
        .outerjoin(Booking, Booking.class_id == GymClass.id)
        .group_by(GymClass.id)
    )


def _bookings() -> Select[*tuple[Any, ...]]:
    return select(
        Booking.id,
        Booking.class_id,
        Booking.member_id,
        Booking.status,
        Booking.created_at,
        Booking.cancelled_at,
        GymClass.name.label("class_name"),
        GymClass.starts_at,
        GymClass.ends_at,
    ).join(GymClass, GymClass.id == Booking.class_id)


async def _booking(s: AsyncSession, booking_id: int) -> BookingOut:
    row = (await s.execute(_bookings().where(Booking.id == booking_id))).one()
    return BookingOut.model_validate(row._mapping)


class GymService:
    def __init__(self, db: Database) -> None:
        self.db = db

    # members -------------------------------------------------------------------------

    async def join(self, user: CurrentUser, membership_type: MembershipType) -> MemberOut:
        stmt = (
            insert(GymMember)
            .values(user_id=user.id, membership_type=membership_type.value)
            .on_conflict_do_nothing(index_elements=["user_id"])
            .returning(GymMember)
        )
        async with self.db.session() as s:
            member = (await s.scalars(stmt)).one_or_none()
        if member is None:
            raise ConflictError("already_member", "You are already a gym member.")
        return _member_out(member, user.email)

    async def membership(self, user: CurrentUser) -> MemberOut:
        async with self.db.session() as s:
            member = await s.scalar(select(GymMember).where(GymMember.user_id == user.id))
        if member is None:
            raise ResourceNotFoundError("not_a_member", "You are not a gym member.")
        return _member_out(member, user.email)

    async def list_members(
        self, *, limit: int, offset: int, membership_type: MembershipType | None = None
    ) -> Page[MemberOut]:
        query = select(GymMember, AuthUser.email).join(AuthUser, AuthUser.id == GymMember.user_id)
        if membership_type is not None:
            query = query.where(GymMember.membership_type == membership_type.value)
        async with self.db.read_session() as s:
            total = await s.scalar(select(func.count()).select_from(query.subquery()))
            rows = await s.execute(query.order_by(GymMember.id).limit(limit).offset(offset))
            items = [_member_out(member, email) for member, email in rows]
        return Page(items=items, total=total or 0, limit=limit, offset=offset)

    # classes -------------------------------------------------------------------------

    async def create_class(self, body: ClassIn) -> ClassOut:
        gym_class = GymClass(**body.model_dump())
        async with self.db.session() as s:
            s.add(gym_class)
            await s.flush()
        return _class_out(gym_class, 0)

    async def get_class(self, class_id: int) -> ClassOut:
        async with self.db.session() as s:
            row = (await s.execute(_classes_with_counts().where(GymClass.id == class_id))).first()
        if row is None:
            raise _class_not_found(class_id)
        return _class_out(row[0], row[1])

    async def list_classes(
        self, *, start: datetime | None, end: datetime | None, limit: int
    ) -> list[ClassOut]:
        """Classes starting in [start, end), by start time; ``start`` defaults to now."""
        query = _classes_with_counts().where(
            GymClass.starts_at >= (start or datetime.now(UTC)),
            # Rows written before input was bounded (year 10000 in UTC) cannot be loaded:
            # leave them out so one such row does not break the timetable for everyone.
            GymClass.ends_at <= MAX_DATETIME,
        )
        if end is not None:
            query = query.where(GymClass.starts_at < end)
        query = query.order_by(GymClass.starts_at, GymClass.id).limit(limit)
        async with self.db.read_session() as s:
            rows = await s.execute(query)
            return [_class_out(gym_class, booked) for gym_class, booked in rows]

    async def delete_class(self, class_id: int) -> None:
        """Delete a class with its bookings (``ON DELETE CASCADE``), booked or cancelled.

        An admin deleting a class means it will not take place, so its bookings go with it
        rather than blocking the delete; a booking in flight finishes first (it holds the
        class row), then goes too.
        """
        async with self.db.session() as s:
            deleted = await s.scalar(
                delete(GymClass).where(GymClass.id == class_id).returning(GymClass.id)
            )
        if deleted is None:
            raise _class_not_found(class_id)

    # bookings ------------------------------------------------------------------------

    async def _member(self, s: AsyncSession, user_id: int) -> GymMember:
        member = await s.scalar(select(GymMember).where(GymMember.user_id == user_id))
        if member is None:
            raise _not_a_member()
        return member

    async def book(self, user: CurrentUser, class_id: int) -> BookingOut:
        """Book a place for ``user``; never more bookings than the class has places.

        The class row stays locked (``FOR UPDATE``) from the capacity count to the commit,
        so concurrent bookings of one class run one after another and each counts the
        places the previous ones took. Bookings of different classes do not wait.
        """

        async def work(s: AsyncSession) -> BookingOut:
            member = await self._member(s, user.id)
            if not member.is_active:
                raise ForbiddenError("membership_inactive", "Your gym membership is inactive.")
            gym_class = await s.scalar(
                select(GymClass).where(GymClass.id == class_id).with_for_update()
            )
            if gym_class is None:
                raise _class_not_found(class_id)
            if gym_class.starts_at <= datetime.now(UTC):
                raise _class_started(gym_class)
            # At most one row per (class, member): a cancelled one is booked again in place.
            previous = (
                await s.execute(
                    select(Booking.id, Booking.status)
                    .where(Booking.class_id == class_id, Booking.member_id == member.id)
                    .with_for_update()
                )
            ).first()
            if previous is not None and previous.status == BOOKED:
                raise ConflictError(
                    "already_booked",
                    f"You already hold booking {previous.id} for this class.",
                )
            booked = await s.scalar(
                select(func.count())
                .select_from(Booking)
                .where(Booking.class_id == class_id, Booking.status == BOOKED)
            )
            if (booked or 0) >= gym_class.capacity:
                raise ConflictError(
                    "class_full", f"All {gym_class.capacity} places of this class are taken."
                )
            if previous is None:
                booking_id = await s.scalar(
                    insert(Booking)
                    .values(class_id=class_id, member_id=member.id, status=BOOKED)
                    .returning(Booking.id)
                )
            else:
                booking_id = previous.id
                # created_at is when the place was taken: the current booking, not the old one.
                await s.execute(
                    update(Booking)
                    .where(Booking.id == booking_id)
                    .values(status=BOOKED, cancelled_at=None, created_at=func.now())
                )
            assert booking_id is not None
            return await _booking(s, booking_id)

        return await transact(self.db, work)

    async def my_bookings(
        self, user: CurrentUser, status: BookingStatus | None = None
    ) -> list[BookingOut]:
        async with self.db.session() as s:
            member = await self._member(s, user.id)
            query = _bookings().where(Booking.member_id == member.id)
            if status is not None:
                query = query.where(Booking.status == status.value)
            rows = await s.execute(query.order_by(GymClass.starts_at, Booking.id))
            return [BookingOut.model_validate(row._mapping) for row in rows]

    async def cancel(self, user: CurrentUser, booking_id: int) -> BookingOut:
        """Cancel a booking of ``user`` (admins: anyone's); its place is free again."""

        async def work(s: AsyncSession) -> BookingOut:
            # Lock the booking only: book() locks class then booking, so taking the class
            # here too would invite deadlocks, and freeing a place cannot overbook.
            row = (
                await s.execute(
                    select(Booking.status, GymMember.user_id, GymClass)
                    .join(GymMember, GymMember.id == Booking.member_id)
                    .join(GymClass, GymClass.id == Booking.class_id)
                    .where(Booking.id == booking_id)
                    .with_for_update(of=Booking)
                )
            ).first()
            if row is None or (row.user_id != user.id and not user.has_role("admin")):
                raise ResourceNotFoundError("booking_not_found", f"Booking {booking_id} not found.")
            if row.status == CANCELLED:
                raise ConflictError("already_cancelled", "This booking is already cancelled.")
            if row.GymClass.starts_at <= datetime.now(UTC):
                raise _class_started(row.GymClass)
            await s.execute(
                update(Booking)
                .where(Booking.id == booking_id)
                .values(status=CANCELLED, cancelled_at=func.now())
            )
            return await _booking(s, booking_id)

        return await transact(self.db, work)
