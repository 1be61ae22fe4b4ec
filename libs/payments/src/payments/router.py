"""Payments routes: the catalogue (admins write, anyone reads) and a user's subscriptions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from api_kit import DatabaseDep, IdPath
from auth.dependencies import AdminDep, CurrentUserDep
from payments.schemas import (
    CancelIn,
    PriceIn,
    PriceOut,
    ProductIn,
    ProductOut,
    SubscribeIn,
    SubscriptionOut,
)
from payments.service import PaymentService, SubscriptionView
from payments.tables import PriceTable, ProductTable

router = APIRouter(prefix="/payments", tags=["payments"])


async def get_payment_service(db: DatabaseDep) -> PaymentService:
    return PaymentService(db)


PaymentServiceDep = Annotated[PaymentService, Depends(get_payment_service)]


def _product_out(product: ProductTable, prices: list[PriceTable]) -> ProductOut:
    return ProductOut(
        id=product.id,
        code=product.code,
        name=product.name,
        description=product.description,
        is_active=product.is_active,
        prices=[PriceOut.model_validate(price, from_attributes=True) for price in prices],
    )


def _subscription_out(view: SubscriptionView) -> SubscriptionOut:
    return SubscriptionOut.model_validate(view, from_attributes=True)


@router.post("/products", status_code=status.HTTP_201_CREATED)
async def create_product(
    body: ProductIn, admin: AdminDep, service: PaymentServiceDep
) -> ProductOut:
    return _product_out(await service.create_product(body.code, body.name, body.description), [])


@router.post("/products/{product_id}/prices", status_code=status.HTTP_201_CREATED)
async def add_price(
    product_id: IdPath, body: PriceIn, admin: AdminDep, service: PaymentServiceDep
) -> PriceOut:
    price = await service.add_price(product_id, body.amount_minor, body.currency, body.interval)
    return PriceOut.model_validate(price, from_attributes=True)


@router.get("/products")
async def list_products(service: PaymentServiceDep) -> list[ProductOut]:
    return [_product_out(entry.product, entry.prices) for entry in await service.catalogue()]


@router.post("/subscriptions", status_code=status.HTTP_201_CREATED)
async def subscribe(
    body: SubscribeIn, user: CurrentUserDep, service: PaymentServiceDep
) -> SubscriptionOut:
    return _subscription_out(await service.subscribe(user.id, body.price_id))


@router.get("/subscriptions")
async def list_subscriptions(
    user: CurrentUserDep, service: PaymentServiceDep
) -> list[SubscriptionOut]:
    return [_subscription_out(view) for view in await service.live_subscriptions(user.id)]


@router.post("/subscriptions/{subscription_id}/cancel")
async def cancel(
    subscription_id: IdPath,
    user: CurrentUserDep,
    service: PaymentServiceDep,
    body: CancelIn | None = None,
) -> SubscriptionOut:
    at_period_end = body.at_period_end if body is not None else CancelIn().at_period_end
    view = await service.cancel(user.id, subscription_id, at_period_end=at_period_end)
    return _subscription_out(view)
