"""Request and response bodies of the notifications routes (strict: unknown fields are refused)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from api_kit import StrictId
from api_kit.pagination import Page

MAX_RECIPIENTS = 10_000
MAX_DATA_BYTES = 16_384


def _strict_json(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Refuse what PostgreSQL's JSONB would: NaN/Infinity, lone surrogates; cap the size."""
    if value is None:
        return None
    try:
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False).encode()
    except ValueError:  # UnicodeEncodeError is one too
        raise ValueError("data must be JSON without NaN, Infinity or lone surrogates") from None
    if len(encoded) > MAX_DATA_BYTES:
        raise ValueError(f"data must serialise to at most {MAX_DATA_BYTES} bytes of JSON")
    return value


UserId = StrictId
NotificationType = Annotated[
    str, StringConstraints(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9_.:-]+$")
]
Title = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Body = Annotated[str, StringConstraints(min_length=1, max_length=10_000)]
Data = Annotated[dict[str, Any] | None, AfterValidator(_strict_json)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class NotificationIn(Strict):
    type: NotificationType
    title: Title
    body: Body
    data: Data = None
    # Duplicates are delivered once.
    user_ids: Annotated[list[UserId], Field(min_length=1, max_length=MAX_RECIPIENTS)]


class NotificationCreatedOut(BaseModel):
    id: int
    recipients: int


class NotificationOut(BaseModel):
    """One notification as its recipient sees it; ``id`` is the notification's id."""

    id: int
    type: str
    title: str
    body: str
    data: dict[str, Any] | None
    created_at: datetime


class ReadOut(BaseModel):
    id: int
    read_at: datetime


class ReadAllOut(BaseModel):
    updated: int


NotificationPage = Page[NotificationOut]
