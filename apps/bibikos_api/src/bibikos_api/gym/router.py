"""Gym routes: memberships, the class schedule and bookings (bibikos_api only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from api_kit import AwareDatetime, DatabaseDep, IdPath
from api_kit.pagination import Limit, Offset, Page
from auth.dependencies import AdminDep, CurrentUserDep
from bibikos_api.gym.schemas import BookingOut, ClassIn, ClassOut, MemberOut, MembershipIn
from bibikos_api.gym.service import GymService
from bibikos_db.models import BookingStatus, MembershipType
from db_shared.errors import InvalidInputError

router = APIRouter(prefix="/gym", tags=["gym"])


async def get_gym_service(db: DatabaseDep) -> GymService:
    # async: FastAPI would run a plain def in the thread pool, a thread hop per request.
    return GymService(db)


GymServiceDep = Annotated[GymService, Depends(get_gym_service)]


# members -------------------------------------------------------------------------------


@router.post("/members", status_code=status.HTTP_201_CREATED)
async def join(body: MembershipIn, user: CurrentUserDep, service: GymServiceDep) -> MemberOut:
    """Make the current user a gym member (409 ``already_member`` the second time)."""
    return await service.join(user, body.membership_type)


@router.get("/members/me")
async def my_membership(user: CurrentUserDep, service: GymServiceDep) -> MemberOut:
    return await service.membership(user)


@router.get("/members")
async def list_members(
    admin: AdminDep,
    service: GymServiceDep,
    limit: Limit = 50,
    offset: Offset = 0,
    membership_type: MembershipType | None = None,
) -> Page[MemberOut]:
    return await service.list_members(limit=limit, offset=offset, membership_type=membership_type)


# classes -------------------------------------------------------------------------------


@router.post("/classes", status_code=status.HTTP_201_CREATED)
async def create_class(body: ClassIn, admin: AdminDep, service: GymServiceDep) -> ClassOut:
    return await service.create_class(body)


@router.get("/classes")
async def list_classes(
    service: GymServiceDep,
    start: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    end: Annotated[AwareDatetime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ClassOut]:
    """Classes starting in [from, to), earliest first; without ``from``, upcoming ones."""
    if start is not None and end is not None and end <= start:
        raise InvalidInputError("invalid_range", "'to' must be later than 'from'.")
    return await service.list_classes(start=start, end=end, limit=limit)


@router.get("/classes/{class_id}")
async def get_class(class_id: IdPath, service: GymServiceDep) -> ClassOut:
    return await service.get_class(class_id)


@router.delete(
    "/classes/{class_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "No such class (``class_not_found``)"}},
)
async def delete_class(class_id: IdPath, admin: AdminDep, service: GymServiceDep) -> Response:
    """Admins only: delete a class; its bookings (booked or cancelled) are deleted with it."""
    await service.delete_class(class_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# bookings ------------------------------------------------------------------------------


@router.post("/classes/{class_id}/bookings", status_code=status.HTTP_201_CREATED)
async def book(class_id: IdPath, user: CurrentUserDep, service: GymServiceDep) -> BookingOut:
    """Book a place: 409 ``class_full``, ``already_booked`` or ``class_started``."""
    return await service.book(user, class_id)


@router.get("/bookings/me")
async def my_bookings(
    user: CurrentUserDep,
    service: GymServiceDep,
    booking_status: Annotated[BookingStatus | None, Query(alias="status")] = None,
) -> list[BookingOut]:
    return await service.my_bookings(user, booking_status)


@router.delete("/bookings/{booking_id}")
async def cancel(booking_id: IdPath, user: CurrentUserDep, service: GymServiceDep) -> BookingOut:
    """Cancel a booking and free its place; answers the cancelled booking."""
    return await service.cancel(user, booking_id)
