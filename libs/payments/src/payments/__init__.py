"""Shared payments feature module: table mixins, written once for every db lib."""

from payments.tables import (
    PaymentCustomerTable,
    PriceInterval,
    PriceTable,
    ProductTable,
    SubscriptionStatus,
    SubscriptionTable,
)

__all__ = [
    "PaymentCustomerTable",
    "PriceInterval",
    "PriceTable",
    "ProductTable",
    "SubscriptionStatus",
    "SubscriptionTable",
]
