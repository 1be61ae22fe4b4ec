"""Contact routes: anyone sends a message; admins read the inbox and resolve messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from api_kit import DatabaseDep, IdPath
from api_kit.pagination import DEFAULT_LIMIT, Limit, Offset
from auth.dependencies import AdminDep
from contact.schemas import (
    ContactCreatedOut,
    ContactIn,
    ContactMessageOut,
    ContactPage,
)
from contact.service import ContactService
from contact.tables import ContactMessageStatus

router = APIRouter(prefix="/contact", tags=["contact"])


async def get_contact_service(db: DatabaseDep) -> ContactService:
    return ContactService(db)


ContactServiceDep = Annotated[ContactService, Depends(get_contact_service)]


@router.post("", status_code=status.HTTP_201_CREATED)
async def submit(body: ContactIn, service: ContactServiceDep) -> ContactCreatedOut:
    row = await service.submit(body.name, str(body.email), body.subject, body.message)
    return ContactCreatedOut(id=row.id, status=ContactMessageStatus(row.status))


@router.get("")
async def inbox(
    admin: AdminDep,
    service: ContactServiceDep,
    status: ContactMessageStatus | None = None,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> ContactPage:
    found = await service.inbox(status, limit=limit, offset=offset)
    items = [ContactMessageOut.model_validate(row, from_attributes=True) for row in found.items]
    return ContactPage(items=items, total=found.total, limit=limit, offset=offset)


@router.post("/{message_id}/resolve")
async def resolve(
    message_id: IdPath, admin: AdminDep, service: ContactServiceDep
) -> ContactMessageOut:
    row = await service.resolve(message_id, admin.id)
    return ContactMessageOut.model_validate(row, from_attributes=True)
