"""Request and response bodies of the gym routes (strict: unknown fields are refused)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from api_kit import AwareDatetime, StrictInt4
from bibikos_db.models import BookingStatus, MembershipType

MAX_CAPACITY = 1000


Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Description = Annotated[str, StringConstraints(max_length=5000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# members ---------------------------------------------------------------------------------


class MembershipIn(Strict):
    membership_type: MembershipType = MembershipType.BASIC


class MemberOut(BaseModel):
    id: int
    user_id: int
    email: str
    membership_type: MembershipType
    joined_at: datetime
    is_active: bool


# classes ---------------------------------------------------------------------------------


class ClassIn(Strict):
    name: Name
    description: Description | None = None
    instructor: Name | None = None
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    capacity: Annotated[StrictInt4, Field(ge=1, le=MAX_CAPACITY)]

    @model_validator(mode="after")
    def _ends_after_start(self) -> Self:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be later than starts_at")
        return self


class ClassOut(BaseModel):
    id: int
    name: str
    description: str | None
    instructor: str | None
    starts_at: datetime
    ends_at: datetime
    capacity: int
    booked: int
    remaining: int


# bookings --------------------------------------------------------------------------------


class BookingOut(BaseModel):
    id: int
    class_id: int
    member_id: int
    status: BookingStatus
    created_at: datetime
    cancelled_at: datetime | None
    class_name: str
    starts_at: datetime
    ends_at: datetime
