"""Payments use cases, written against the ``Database`` protocol only.

There is no external payment provider yet: customers are created with provider
``internal`` and subscriptions start ``active``. Every timestamp a use case writes comes from
the database clock (``now()`` of the transaction), the same clock as the server defaults.
"""

from __future__ import annotations

import calendar
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, func, not_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db_shared import Database, NotFoundError, transact
from db_shared.errors import ConflictError, InvalidInputError
from payments.tables import (
    PaymentCustomerTable,
    PriceInterval,
    PriceTable,
    ProductTable,
    SubscriptionStatus,
    SubscriptionTable,
)

PROVIDER = "internal"
# A subscription in one of these states is over and never comes back.
ENDED = (SubscriptionStatus.CANCELED.value, SubscriptionStatus.INCOMPLETE_EXPIRED.value)


def add_months(moment: datetime, months: int) -> datetime:
    """``moment`` plus calendar months, clamped to the month's last day (Jan 31 -> Feb 28)."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    return moment.replace(
        year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1])
    )


def period_end(start: datetime, interval: PriceInterval) -> datetime:
    """End of the first billing period of a recurring ``interval`` starting at ``start``."""
    if interval is PriceInterval.MONTH:
        return add_months(start, 1)
    if interval is PriceInterval.YEAR:
        return add_months(start, 12)
    raise ValueError(f"a {interval.value!r} price has no billing period")


@dataclass(frozen=True)
class Catalogue:
    """An active product with its active prices."""

    product: ProductTable
    prices: list[PriceTable]


@dataclass(frozen=True)
class SubscriptionView:
    """A subscription with the money it charges (minor units and currency)."""

    id: int
    price_id: int
    product_id: int
    status: str
    amount_minor: int
    currency: str
    interval: str
    current_period_start: datetime
    current_period_end: datetime
    cancel_at_period_end: bool
    canceled_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, sub: SubscriptionTable, price: PriceTable) -> SubscriptionView:
        return cls(
            id=sub.id,
            price_id=price.id,
            product_id=price.product_id,
            status=sub.status,
            amount_minor=price.amount_minor,
            currency=price.currency,
            interval=price.interval,
            current_period_start=sub.current_period_start,
            current_period_end=sub.current_period_end,
            cancel_at_period_end=sub.cancel_at_period_end,
            canceled_at=sub.canceled_at,
            created_at=sub.created_at,
        )


class PaymentService:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.Customer = db.model(PaymentCustomerTable)
        self.Product = db.model(ProductTable)
        self.Price = db.model(PriceTable)
        self.Subscription = db.model(SubscriptionTable)

    def _live(self, now: datetime | ColumnElement[datetime]) -> ColumnElement[bool]:
        """Subscriptions still running at ``now``: not ended, and not past a scheduled end."""
        S = self.Subscription
        return and_(
            S.status.not_in(ENDED),
            not_(and_(S.cancel_at_period_end, S.current_period_end <= now)),
        )

    # catalogue -----------------------------------------------------------------------

    async def create_product(self, code: str, name: str, description: str | None) -> ProductTable:
        async with self.db.session() as s:
            product = self.Product(code=code, name=name, description=description)
            s.add(product)
            await s.flush()
            return product

    async def add_price(
        self, product_id: int, amount_minor: int, currency: str, interval: PriceInterval
    ) -> PriceTable:
        async with self.db.session() as s:
            if await s.get(self.Product, product_id) is None:
                raise NotFoundError("product", product_id)
            price = self.Price(
                product_id=product_id,
                amount_minor=amount_minor,
                currency=currency,
                interval=interval.value,
            )
            s.add(price)
            await s.flush()
            return price

    async def catalogue(self) -> list[Catalogue]:
        """Active products (by id) with their active prices (by id)."""
        P, Pr = self.Product, self.Price
        async with self.db.read_session() as s:
            products = list(await s.scalars(select(P).where(P.is_active).order_by(P.id)))
            prices = await s.scalars(
                select(Pr)
                .where(Pr.product_id.in_([p.id for p in products]), Pr.is_active)
                .order_by(Pr.id)
            )
        by_product: dict[int, list[PriceTable]] = {p.id: [] for p in products}
        for price in prices:
            by_product[price.product_id].append(price)
        return [Catalogue(p, by_product[p.id]) for p in products]

    # subscriptions -------------------------------------------------------------------

    async def subscribe(self, user_id: int, price_id: int) -> SubscriptionView:
        """Start an active subscription to a recurring price, creating the customer if new.

        Refuses a missing price (``NotFoundError``), an inactive one (``ConflictError``), a
        one-off one (``InvalidInputError``) and a second live subscription of the same user
        to the same price (``ConflictError``).
        """
        P, Pr, C, S = self.Product, self.Price, self.Customer, self.Subscription

        async def work(s: AsyncSession) -> SubscriptionView:
            found = (
                await s.execute(
                    select(Pr, P.is_active, func.now())
                    .join(P, P.id == Pr.product_id)
                    .where(Pr.id == price_id)
                )
            ).first()
            if found is None:
                raise NotFoundError("price", price_id)
            price, product_active, now = found
            interval = PriceInterval(price.interval)
            if interval is PriceInterval.ONCE:
                raise InvalidInputError(
                    "price_not_recurring",
                    f"Price {price_id} is a one-off price; only monthly or yearly prices "
                    "can be subscribed to.",
                    fields=("price_id",),
                )
            if not (price.is_active and product_active):
                raise ConflictError(
                    "price_inactive",
                    f"Price {price_id} is no longer offered.",
                    fields=("price_id",),
                )
            await s.execute(
                insert(C)
                .values(
                    user_id=user_id,
                    provider=PROVIDER,
                    provider_customer_id=f"cus_{secrets.token_hex(12)}",
                )
                .on_conflict_do_nothing(index_elements=["user_id"])
            )
            # Locking the customer serialises one user's concurrent subscribe calls, so the
            # duplicate check below cannot race (the table has no partial unique index).
            customer_id = (
                await s.execute(select(C.id).where(C.user_id == user_id).with_for_update())
            ).scalar_one()
            duplicate = await s.scalar(
                select(S.id).where(
                    S.customer_id == customer_id, S.price_id == price_id, self._live(now)
                )
            )
            if duplicate is not None:
                raise ConflictError(
                    "already_subscribed",
                    f"You already have subscription {duplicate} to price {price_id}.",
                    fields=("price_id",),
                )
            start = now.astimezone(UTC)
            sub = S(
                customer_id=customer_id,
                price_id=price_id,
                status=SubscriptionStatus.ACTIVE.value,
                current_period_start=start,
                current_period_end=period_end(start, interval),
            )
            s.add(sub)
            await s.flush()
            return SubscriptionView.of(sub, price)

        return await transact(self.db, work)

    async def cancel(
        self, user_id: int, subscription_id: int, *, at_period_end: bool
    ) -> SubscriptionView:
        """Cancel now (status ``canceled``) or at the end of the current period.

        Another user's subscription is reported missing (``NotFoundError``); an ended one is
        a ``ConflictError``.
        Asking again to cancel at period end changes nothing.
        """
        Pr, C, S = self.Price, self.Customer, self.Subscription

        async def work(s: AsyncSession) -> SubscriptionView:
            found = (
                await s.execute(
                    select(S, Pr, func.now())
                    .join(C, C.id == S.customer_id)
                    .join(Pr, Pr.id == S.price_id)
                    .where(S.id == subscription_id, C.user_id == user_id)
                    .with_for_update(of=S)
                )
            ).first()
            if found is None:
                raise NotFoundError("subscription", subscription_id)
            sub, price, now = found
            if sub.status in ENDED:
                raise ConflictError(
                    "subscription_ended",
                    f"Subscription {subscription_id} is already {sub.status}.",
                )
            if at_period_end:
                sub.cancel_at_period_end = True
            else:
                sub.status = SubscriptionStatus.CANCELED.value
                sub.canceled_at = now
            await s.flush()
            return SubscriptionView.of(sub, price)

        return await transact(self.db, work)

    async def live_subscriptions(self, user_id: int) -> list[SubscriptionView]:
        """The user's subscriptions that have not ended, oldest first."""
        Pr, C, S = self.Price, self.Customer, self.Subscription
        async with self.db.session() as s:
            rows = (
                await s.execute(
                    select(S, Pr)
                    .join(C, C.id == S.customer_id)
                    .join(Pr, Pr.id == S.price_id)
                    .where(C.user_id == user_id, self._live(func.now()))
                    .order_by(S.id)
                )
            ).all()
        return [SubscriptionView.of(sub, price) for sub, price in rows]
