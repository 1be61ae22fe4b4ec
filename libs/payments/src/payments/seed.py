"""Development seed data for payments tables: one product with two prices."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from payments.tables import PriceTable, ProductTable


def seed_payments(session: Session, product: type[ProductTable], price: type[PriceTable]) -> None:
    session.execute(
        insert(product)
        .values(code="pro", name="Pro plan", description="Everything, monthly or yearly")
        .on_conflict_do_nothing(index_elements=["code"])
    )
    product_id = session.scalars(select(product.id).where(product.code == "pro")).one()
    session.execute(
        insert(price)
        .values(
            [
                {
                    "product_id": product_id,
                    "amount_minor": 999,
                    "currency": "EUR",
                    "interval": "month",
                },
                {
                    "product_id": product_id,
                    "amount_minor": 9990,
                    "currency": "EUR",
                    "interval": "year",
                },
            ]
        )
        .on_conflict_do_nothing()
    )
