"""Shared payments feature module: table mixins, written once for every db lib.

The use cases live in ``payments.service`` and the routes in ``payments.router`` (the
``api`` extra: ``payments[api]``); they are not imported here, so a db lib importing the
tables (or ``payments.seed``) loads neither FastAPI nor api_kit.
"""

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
