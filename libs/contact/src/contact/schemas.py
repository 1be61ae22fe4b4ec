"""Request and response bodies of the contact routes (strict: unknown fields are refused)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from api_kit.pagination import Page
from contact.tables import ContactMessageStatus

# Not lowercased (the sender may have no account): only the domain, which is
# case-insensitive, is normalised by the validator.
Email = Annotated[EmailStr, Field(max_length=320)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Subject = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Message = Annotated[str, StringConstraints(min_length=1, max_length=5000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ContactIn(Strict):
    name: Name
    email: Email
    subject: Subject
    message: Message


class ContactCreatedOut(BaseModel):
    id: int
    status: ContactMessageStatus


class ContactMessageOut(BaseModel):
    id: int
    name: str
    email: str
    subject: str
    message: str
    status: ContactMessageStatus
    created_at: datetime
    resolved_at: datetime | None
    resolved_by_id: int | None


ContactPage = Page[ContactMessageOut]
