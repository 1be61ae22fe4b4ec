"""Development seed data: the roles and a sample product. Safe to run repeatedly."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core_db.models import Price, Product, Role

ROLES = {"admin": "Full access, including contact messages", "user": "A signed-up user"}


def seed(session: Session) -> None:
    session.execute(
        insert(Role)
        .values([{"name": n, "description": d} for n, d in ROLES.items()])
        .on_conflict_do_nothing(index_elements=["name"])
    )
    session.execute(
        insert(Product)
        .values(code="pro", name="Pro plan", description="Everything, monthly or yearly")
        .on_conflict_do_nothing(index_elements=["code"])
    )
    product_id = session.scalars(select(Product.id).where(Product.code == "pro")).one()
    session.execute(
        insert(Price)
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
