"""Payments tables, defined once as declarative mixins.

Each db lib composes these into its own declarative base
(``class Price(PriceTable, Base): pass``). Money is an integer amount in minor units
(cents) plus an ISO 4217 currency code; never a float. Enumerations are a String column
with a CHECK built from the ``StrEnum`` below, not a native PostgreSQL ENUM, so adding a
value is a one-line migration.

A Constraint belongs to one Table, so ``__table_args__`` is a ``declared_attr`` that
builds fresh objects for each db lib that composes the mixin.
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
    Index,
    String,
    Text,
    UniqueConstraint,
    column,
    false,
    func,
    true,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from db_shared.tables import TableMixin


class SubscriptionStatus(enum.StrEnum):
    """Lifecycle of a subscription (the payment provider's vocabulary)."""

    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    UNPAID = "unpaid"
    PAUSED = "paused"


class PriceInterval(enum.StrEnum):
    """How often a price is charged."""

    MONTH = "month"
    YEAR = "year"
    ONCE = "once"


class PaymentCustomerTable(TableMixin):
    """A user's customer record at the payment provider; at most one per user."""

    __tablename__ = "payment_customers"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("auth_users.id", ondelete="CASCADE"),
        unique=True,
        nullable=False,
    )
    # Provider key such as "stripe".
    provider: Mapped[str] = mapped_column(String(50), nullable=False)
    provider_customer_id: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class ProductTable(TableMixin):
    """Something that can be bought; its prices live in ``prices``."""

    __tablename__ = "products"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # Stable slug used in code and URLs, e.g. "pro".
    code: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=true())
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class PriceTable(TableMixin):
    """The amount charged for a product in one currency and interval."""

    __tablename__ = "prices"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # A product with prices can be deleted only while no subscription uses them
    # (subscriptions.price_id is RESTRICT).
    product_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("products.id", ondelete="CASCADE"), nullable=False
    )
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    interval: Mapped[str] = mapped_column(String(8), nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=true())
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (
            CheckConstraint("amount_minor >= 0", name="amount_non_negative"),
            CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_iso"),
            CheckConstraint(
                column("interval").in_([i.value for i in PriceInterval]), name="interval_valid"
            ),
            # Leading product_id also serves "prices of a product" lookups.
            UniqueConstraint("product_id", "currency", "interval"),
        )


class SubscriptionTable(TableMixin):
    """A customer's recurring purchase of a price."""

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("payment_customers.id", ondelete="CASCADE"), nullable=False
    )
    # RESTRICT: a price that anyone subscribes to cannot be deleted, only deactivated.
    price_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("prices.id", ondelete="RESTRICT"),
        index=True,
        nullable=False,
    )
    status: Mapped[str] = mapped_column(
        String(32), nullable=False, server_default=SubscriptionStatus.INCOMPLETE.value
    )
    current_period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    current_period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    cancel_at_period_end: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=false()
    )
    canceled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (
            CheckConstraint(
                column("status").in_([s.value for s in SubscriptionStatus]), name="status_valid"
            ),
            CheckConstraint("current_period_end > current_period_start", name="period_order"),
            # A user's subscriptions (via their unique customer row), optionally by status.
            Index(None, "customer_id", "status"),
        )


__all__ = [
    "PaymentCustomerTable",
    "PriceInterval",
    "PriceTable",
    "ProductTable",
    "SubscriptionStatus",
    "SubscriptionTable",
]
