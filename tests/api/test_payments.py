"""Payments over HTTP, once per app: catalogue, subscriptions, cancellation, refusals."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from harness import Api

from payments.service import add_months


def _catalogue(api: Api, admin: dict[str, Any], code: str = "pro") -> dict[str, Any]:
    """A product with a monthly, a yearly and a one-off price."""
    h = admin["headers"]
    r = api.client.post(
        "/payments/products", headers=h, json={"code": code, "name": "Pro", "description": "All"}
    )
    assert r.status_code == 201, r.text
    product = r.json()
    prices = {}
    for interval, amount in (("month", 999), ("year", 9990), ("once", 4900)):
        p = api.client.post(
            f"/payments/products/{product['id']}/prices",
            headers=h,
            json={"amount_minor": amount, "currency": "EUR", "interval": interval},
        )
        assert p.status_code == 201, p.text
        prices[interval] = p.json()
    return {"product": product, "prices": prices}


def _subscribe(api: Api, user: dict[str, Any], price_id: Any) -> Any:
    return api.client.post(
        "/payments/subscriptions", headers=user["headers"], json={"price_id": price_id}
    )


def test_admin_builds_catalogue_anyone_reads_it(api: Api) -> None:
    admin = api.admin()
    made = _catalogue(api, admin)
    product = made["product"]
    assert product["code"] == "pro"
    assert product["is_active"] is True
    assert product["prices"] == []
    monthly = made["prices"]["month"]
    assert monthly == {
        "id": monthly["id"],
        "product_id": product["id"],
        "amount_minor": 999,
        "currency": "EUR",
        "interval": "month",
        "is_active": True,
    }
    # Inactive products and prices are hidden from the public list.
    hidden = _catalogue(api, admin, code="old")
    api.sql("UPDATE products SET is_active = false WHERE id = :p", p=hidden["product"]["id"])
    api.sql("UPDATE prices SET is_active = false WHERE id = :p", p=made["prices"]["once"]["id"])
    listed = api.client.get("/payments/products")
    assert listed.status_code == 200
    (only,) = listed.json()
    assert only["code"] == "pro"
    assert [(p["interval"], p["amount_minor"], p["currency"]) for p in only["prices"]] == [
        ("month", 999, "EUR"),
        ("year", 9990, "EUR"),
    ]

    dup = api.client.post(
        "/payments/products", headers=admin["headers"], json={"code": "pro", "name": "Again"}
    )
    assert dup.status_code == 409
    assert dup.json()["fields"] == ["code"]
    same_price = api.client.post(
        f"/payments/products/{product['id']}/prices",
        headers=admin["headers"],
        json={"amount_minor": 1, "currency": "EUR", "interval": "month"},
    )
    assert same_price.status_code == 409
    assert set(same_price.json()["fields"]) == {"product_id", "currency", "interval"}
    missing = api.client.post(
        "/payments/products/999999/prices",
        headers=admin["headers"],
        json={"amount_minor": 1, "currency": "EUR", "interval": "month"},
    )
    assert missing.status_code == 404
    assert api.sql("SELECT count(*) FROM products")[0][0] == 2
    assert api.sql("SELECT count(*) FROM prices")[0][0] == 6


def test_only_admins_write_the_catalogue(api: Api) -> None:
    user = api.register()
    r = api.client.post(
        "/payments/products", headers=user["headers"], json={"code": "x", "name": "X"}
    )
    assert r.status_code == 403
    assert api.client.post("/payments/products", json={"code": "x", "name": "X"}).status_code == 401
    assert api.sql("SELECT count(*) FROM products")[0][0] == 0


def test_subscribe_list_duplicate_and_cancel(api: Api) -> None:
    admin = api.admin()
    prices = _catalogue(api, admin)["prices"]
    user = api.register()
    h = user["headers"]

    r = _subscribe(api, user, prices["month"]["id"])
    assert r.status_code == 201, r.text
    monthly = r.json()
    assert monthly["status"] == "active"
    assert (monthly["amount_minor"], monthly["currency"]) == (999, "EUR")
    assert monthly["cancel_at_period_end"] is False
    assert monthly["canceled_at"] is None
    start = datetime.fromisoformat(monthly["current_period_start"])
    assert datetime.fromisoformat(monthly["current_period_end"]) == add_months(start, 1)
    customer = api.sql(
        "SELECT id, provider, provider_customer_id FROM payment_customers WHERE user_id = :u",
        u=user["id"],
    )
    assert len(customer) == 1
    assert customer[0][1] == "internal"
    assert customer[0][2].startswith("cus_")
    stored = api.sql(
        "SELECT customer_id, price_id, status, current_period_start, current_period_end"
        " FROM subscriptions WHERE id = :s",
        s=monthly["id"],
    )[0]
    assert stored[:3] == (customer[0][0], prices["month"]["id"], "active")
    assert stored[3] == start
    assert stored[4] == datetime.fromisoformat(monthly["current_period_end"])

    yearly = _subscribe(api, user, prices["year"]["id"]).json()
    y_start = datetime.fromisoformat(yearly["current_period_start"])
    assert datetime.fromisoformat(yearly["current_period_end"]) == add_months(y_start, 12)
    # One customer row however many subscriptions.
    assert api.sql("SELECT count(*) FROM payment_customers")[0][0] == 1

    dup = _subscribe(api, user, prices["month"]["id"])
    assert dup.status_code == 409
    assert dup.json()["code"] == "already_subscribed"
    assert api.sql("SELECT count(*) FROM subscriptions")[0][0] == 2

    listed = api.client.get("/payments/subscriptions", headers=h).json()
    assert [(s["id"], s["amount_minor"], s["currency"]) for s in listed] == [
        (monthly["id"], 999, "EUR"),
        (yearly["id"], 9990, "EUR"),
    ]

    # Cancel at period end (the default): still listed, flagged.
    later = api.client.post(f"/payments/subscriptions/{yearly['id']}/cancel", headers=h)
    assert later.status_code == 200, later.text
    assert later.json()["status"] == "active"
    assert later.json()["cancel_at_period_end"] is True
    assert later.json()["canceled_at"] is None
    flag = api.sql("SELECT cancel_at_period_end FROM subscriptions WHERE id = :s", s=yearly["id"])
    assert flag[0][0] is True
    assert len(api.client.get("/payments/subscriptions", headers=h).json()) == 2

    # Cancel now: status canceled, canceled_at set, dropped from the list.
    now = api.client.post(
        f"/payments/subscriptions/{monthly['id']}/cancel",
        headers=h,
        json={"at_period_end": False},
    )
    assert now.status_code == 200, now.text
    assert now.json()["status"] == "canceled"
    assert now.json()["canceled_at"] is not None
    status, canceled_at = api.sql(
        "SELECT status, canceled_at FROM subscriptions WHERE id = :s", s=monthly["id"]
    )[0]
    assert status == "canceled"
    assert canceled_at is not None
    assert [s["id"] for s in api.client.get("/payments/subscriptions", headers=h).json()] == [
        yearly["id"]
    ]
    again = api.client.post(
        f"/payments/subscriptions/{monthly['id']}/cancel",
        headers=h,
        json={"at_period_end": False},
    )
    assert again.status_code == 409
    assert again.json()["code"] == "subscription_ended"

    # After cancelling, the same price can be subscribed to again.
    assert _subscribe(api, user, prices["month"]["id"]).status_code == 201

    # Someone else's subscription is not found.
    other = api.register()
    theirs = api.client.post(
        f"/payments/subscriptions/{yearly['id']}/cancel", headers=other["headers"]
    )
    assert theirs.status_code == 404
    assert api.client.get("/payments/subscriptions", headers=other["headers"]).json() == []
    missing = api.client.post("/payments/subscriptions/999999/cancel", headers=h)
    assert missing.status_code == 404
    assert api.client.get("/payments/subscriptions").status_code == 401


def test_subscribe_refusals(api: Api) -> None:
    admin = api.admin()
    prices = _catalogue(api, admin)["prices"]
    user = api.register()

    once = _subscribe(api, user, prices["once"]["id"])
    assert once.status_code == 422
    assert once.json()["code"] == "price_not_recurring"
    assert once.json()["fields"] == ["price_id"]

    unknown = _subscribe(api, user, 999_999)
    assert unknown.status_code == 404
    assert unknown.json() == {
        "type": "https://errors.data-layer.dev/not_found",
        "title": "Not Found",
        "status": 404,
        "code": "not_found",
        "detail": "price 999999 was not found",
    }
    assert unknown.headers["content-type"] == "application/problem+json"

    api.sql("UPDATE prices SET is_active = false WHERE id = :p", p=prices["month"]["id"])
    inactive = _subscribe(api, user, prices["month"]["id"])
    assert inactive.status_code == 409
    assert inactive.json()["code"] == "price_inactive"

    # Refused requests leave nothing behind, not even the customer row.
    assert api.sql("SELECT count(*) FROM subscriptions")[0][0] == 0
    assert api.sql("SELECT count(*) FROM payment_customers")[0][0] == 0


def test_malformed_payments_bodies_are_422(api: Api) -> None:
    admin = api.admin()
    h = admin["headers"]
    product = _catalogue(api, admin)["product"]
    url = f"/payments/products/{product['id']}/prices"
    good = {"amount_minor": 100, "currency": "USD", "interval": "month"}
    bad_prices: list[dict[str, Any]] = [
        {"amount_minor": -1},
        {"amount_minor": 10**12 + 1},
        {"amount_minor": 2**64},
        {"amount_minor": 1.5},
        {"amount_minor": 100.0},
        {"amount_minor": "100"},
        {"amount_minor": True},
        {"amount_minor": None},
        {"currency": "usd"},
        {"currency": "US"},
        {"currency": "USDD"},
        {"currency": "€UR"},
        {"currency": 840},
        {"interval": "week"},
        {"interval": None},
        {"extra": 1},
    ]
    for change in bad_prices:
        r = api.client.post(url, headers=h, json={**good, **change})
        assert r.status_code == 422, (change, r.text)
    missing_field = api.client.post(url, headers=h, json={"amount_minor": 100, "currency": "USD"})
    assert missing_field.status_code == 422
    # The bounds themselves are accepted.
    for amount, currency in ((0, "USD"), (10**12, "JPY")):
        r = api.client.post(
            url, headers=h, json={"amount_minor": amount, "currency": currency, "interval": "year"}
        )
        assert r.status_code in (201, 409), r.text
    assert api.sql("SELECT max(amount_minor) FROM prices")[0][0] == 10**12

    bad_products: list[dict[str, Any]] = [
        {"code": "Has Caps", "name": "x"},
        {"code": "x" * 65, "name": "x"},
        {"code": "ok", "name": ""},
        {"code": "ok", "name": "x" * 256},
        {"code": "ok", "name": "x", "description": "x" * 5001},
        {"code": "ok", "name": ["x"]},
        {"code": "ok", "name": "x", "price": 1},
    ]
    for body in bad_products:
        r = api.client.post("/payments/products", headers=h, json=body)
        assert r.status_code == 422, (body, r.text)

    user = api.register()
    for price_id in (0, -5, "1", 1.0, None, 2**63, [1]):
        r = _subscribe(api, user, price_id)
        assert r.status_code == 422, (price_id, r.text)
    extra = api.client.post(
        "/payments/subscriptions", headers=user["headers"], json={"price_id": 1, "coupon": "x"}
    )
    assert extra.status_code == 422
    cancel = api.client.post(
        "/payments/subscriptions/1/cancel", headers=user["headers"], json={"at_period_end": "no"}
    )
    assert cancel.status_code == 422
    assert api.sql("SELECT count(*) FROM products")[0][0] == 1
    assert api.sql("SELECT count(*) FROM subscriptions")[0][0] == 0


def test_unparseable_body_is_400_and_a_wrong_shape_422(api: Api) -> None:
    admin = api.admin()
    h = {**admin["headers"], "content-type": "application/json"}
    for url in ("/payments/products", "/payments/subscriptions", "/payments/products/1/prices"):
        assert api.client.post(url, headers=h, content=b"{not json").status_code == 400, url
        assert api.client.post(url, headers=h, content=b"[]").status_code == 422, url
        assert api.client.post(url, headers=h, content=b'[{"code": "x"}]').status_code == 422
    cancel = "/payments/subscriptions/1/cancel"
    assert api.client.post(cancel, headers=h, content=b"{not json").status_code == 400
    assert api.client.post(cancel, headers=h, content=b"[]").status_code == 422
    assert api.sql("SELECT count(*) FROM products")[0][0] == 0


def test_nan_amount_is_422(api: Api) -> None:
    admin = api.admin()
    product = _catalogue(api, admin)["product"]
    r = api.client.post(
        f"/payments/products/{product['id']}/prices",
        headers={**admin["headers"], "content-type": "application/json"},
        content=b'{"amount_minor": NaN, "currency": "USD", "interval": "month"}',
    )
    assert r.status_code == 422


def test_add_months_clamps_to_month_end() -> None:
    assert add_months(datetime(2025, 1, 31), 1) == datetime(2025, 2, 28)
    assert add_months(datetime(2024, 1, 31), 1) == datetime(2024, 2, 29)
    assert add_months(datetime(2025, 12, 15), 1) == datetime(2026, 1, 15)
    assert add_months(datetime(2024, 2, 29), 12) == datetime(2025, 2, 28)
    assert add_months(datetime(2025, 3, 31), 1) == datetime(2025, 4, 30)
