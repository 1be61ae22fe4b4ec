"""Notifications routes: an admin fans a notification out; each user reads their own."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from api_kit import DatabaseDep, IdPath
from api_kit.pagination import DEFAULT_LIMIT, Limit, Offset
from auth.dependencies import AdminDep, CurrentUserDep
from notifications.schemas import (
    NotificationCreatedOut,
    NotificationIn,
    NotificationOut,
    NotificationPage,
    ReadAllOut,
    ReadOut,
)
from notifications.service import NotificationService

router = APIRouter(prefix="/notifications", tags=["notifications"])


async def get_notification_service(db: DatabaseDep) -> NotificationService:
    return NotificationService(db)


NotificationServiceDep = Annotated[NotificationService, Depends(get_notification_service)]


@router.post("", status_code=status.HTTP_201_CREATED)
async def send(
    body: NotificationIn, admin: AdminDep, service: NotificationServiceDep
) -> NotificationCreatedOut:
    notification_id, recipients = await service.send(
        sender_id=admin.id,
        type=body.type,
        title=body.title,
        body=body.body,
        data=body.data,
        user_ids=body.user_ids,
    )
    return NotificationCreatedOut(id=notification_id, recipients=recipients)


@router.get("/unread")
async def unread(
    user: CurrentUserDep,
    service: NotificationServiceDep,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> NotificationPage:
    found = await service.unread(user.id, limit=limit, offset=offset)
    items = [NotificationOut.model_validate(item, from_attributes=True) for item in found.items]
    return NotificationPage(items=items, total=found.total, limit=limit, offset=offset)


@router.post("/read-all")
async def read_all(user: CurrentUserDep, service: NotificationServiceDep) -> ReadAllOut:
    return ReadAllOut(updated=await service.mark_all_read(user.id))


@router.post("/{notification_id}/read")
async def read(
    notification_id: IdPath, user: CurrentUserDep, service: NotificationServiceDep
) -> ReadOut:
    read_at = await service.mark_read(user.id, notification_id)
    return ReadOut(id=notification_id, read_at=read_at)
