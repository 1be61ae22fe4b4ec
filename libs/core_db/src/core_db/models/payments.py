"""The payments models of core_db, composed from the mixins in ``payments.tables``."""

from __future__ import annotations

from core_db.models.base import Base
from payments.tables import PaymentCustomerTable, PriceTable, ProductTable, SubscriptionTable


class PaymentCustomer(PaymentCustomerTable, Base):
    pass


class Product(ProductTable, Base):
    pass


class Price(PriceTable, Base):
    pass


class Subscription(SubscriptionTable, Base):
    pass
