"""Values the database or the response model cannot round-trip are refused when written.

One stored out-of-range value used to make a listing unreadable for everyone (a class
starting in year 10000 UTC turned ``GET /gym/classes`` into a 422 for every caller), and
numbers arrived as ``true`` or ``"1"``. Emails that differ only by Unicode compatibility
forms became two accounts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness import Api


@pytest.fixture
def gym(serve: Callable[[str], Api]) -> Api:
    return serve("bibikos_api")


def at(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def class_body(**change: Any) -> dict[str, Any]:
    return {"name": "Yoga", "starts_at": at(24), "ends_at": at(25), "capacity": 5, **change}


# datetimes PostgreSQL stores but Python cannot load back ----------------------------------


@pytest.mark.parametrize(
    "change",
    [
        # year 10000 in UTC: PostgreSQL stores it, Python cannot load it back
        {"starts_at": "9999-12-31T20:00:00-14:00", "ends_at": "9999-12-31T21:00:00-14:00"},
        # year 0 in UTC
        {"starts_at": "0001-01-01T00:00:00+14:00", "ends_at": "0001-01-01T01:00:00+14:00"},
        {"ends_at": "9999-12-31T23:59:59.999999-12:00"},
    ],
)
def test_classes_python_cannot_load_back_are_refused_and_the_listing_stays_readable(
    gym: Api, change: dict[str, Any]
) -> None:
    admin = gym.admin()
    ok = gym.client.post("/gym/classes", headers=admin["headers"], json=class_body())
    assert ok.status_code == 201, ok.text
    r = gym.client.post("/gym/classes", headers=admin["headers"], json=class_body(**change))
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_request"
    assert "9999-12-31" not in r.text  # the input is not echoed
    assert "0001-01-01" not in r.text
    assert gym.sql("SELECT count(*) FROM gym_classes")[0][0] == 1
    listing = gym.client.get("/gym/classes")
    assert listing.status_code == 200, listing.text
    assert [c["id"] for c in listing.json()] == [ok.json()["id"]]
    window = gym.client.get("/gym/classes", params={"from": "0001-01-01T00:00:00+14:00"})
    assert window.status_code == 422


def test_datetimes_at_the_edges_of_the_range_round_trip(gym: Api) -> None:
    admin = gym.admin()
    body = class_body(starts_at="9999-12-30T10:00:00+00:00", ends_at="9999-12-30T11:00:00+00:00")
    r = gym.client.post("/gym/classes", headers=admin["headers"], json=body)
    assert r.status_code == 201, r.text
    assert gym.client.get("/gym/classes").status_code == 200
    assert gym.client.get(f"/gym/classes/{r.json()['id']}").status_code == 200


# admins delete a class ---------------------------------------------------------------


def test_admin_deletes_a_class_and_its_bookings(gym: Api) -> None:
    admin = gym.admin()
    cid = gym.client.post("/gym/classes", headers=admin["headers"], json=class_body()).json()["id"]
    user = gym.register()
    assert gym.client.post("/gym/members", headers=user["headers"], json={}).status_code == 201
    booked = gym.client.post(f"/gym/classes/{cid}/bookings", headers=user["headers"])
    assert booked.status_code == 201, booked.text

    assert gym.client.delete(f"/gym/classes/{cid}").status_code == 401
    assert gym.client.delete(f"/gym/classes/{cid}", headers=user["headers"]).status_code == 403
    gone = gym.client.delete(f"/gym/classes/{cid}", headers=admin["headers"])
    assert gone.status_code == 204, gone.text
    assert gym.sql("SELECT count(*) FROM gym_classes")[0][0] == 0
    assert gym.sql("SELECT count(*) FROM bookings")[0][0] == 0
    again = gym.client.delete(f"/gym/classes/{cid}", headers=admin["headers"])
    assert again.status_code == 404
    assert again.json()["code"] == "class_not_found"


def test_a_row_stored_before_the_fix_can_be_deleted(gym: Api) -> None:
    """A class written in year 10000 UTC before validation existed: listing skips it, an
    admin deletes it."""
    admin = gym.admin()
    (cid,) = gym.sql(
        "INSERT INTO gym_classes (name, starts_at, ends_at, capacity) VALUES "
        "('bad', '9999-12-31T20:00:00-14:00', '9999-12-31T21:00:00-14:00', 1) RETURNING id"
    )[0]
    assert gym.client.get("/gym/classes").status_code == 200
    assert gym.client.delete(f"/gym/classes/{cid}", headers=admin["headers"]).status_code == 204
    assert gym.sql("SELECT count(*) FROM gym_classes")[0][0] == 0


# strict numbers ------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [True, "1", 1.0, "10", 2**31, -(2**31) - 1])
def test_capacity_is_a_json_integer(gym: Api, capacity: object) -> None:
    admin = gym.admin()
    r = gym.client.post(
        "/gym/classes", headers=admin["headers"], json=class_body(capacity=capacity)
    )
    assert r.status_code == 422, r.text
    assert gym.sql("SELECT count(*) FROM gym_classes")[0][0] == 0


@pytest.mark.parametrize("value", [True, "1", 1.0])
def test_ids_and_amounts_in_bodies_are_json_integers(api: Api, value: object) -> None:
    admin = api.admin()
    h = admin["headers"]
    product = api.client.post("/payments/products", headers=h, json={"code": "p1", "name": "P"})
    assert product.status_code == 201, product.text
    price_url = f"/payments/products/{product.json()['id']}/prices"
    price = {"amount_minor": 100, "currency": "EUR", "interval": "month"}
    assert (
        api.client.post(price_url, headers=h, json={**price, "amount_minor": value}).status_code
        == 422
    )
    assert (
        api.client.post("/payments/subscriptions", headers=h, json={"price_id": value}).status_code
        == 422
    )
    note = {"type": "t", "title": "t", "body": "b", "user_ids": [value]}
    assert api.client.post("/notifications", headers=h, json=note).status_code == 422


# email normalisation -------------------------------------------------------------------


def test_compatibility_forms_of_an_email_are_one_account(api: Api) -> None:
    body = {"email": "ada@example.com", "password": "long enough 1"}
    assert api.client.post("/auth/register", json=body).status_code == 201
    for variant in ("\uff41\uff44\uff41@example.com", "ADA@EXAMPLE.COM", "\uff21da@example.com"):
        again = api.client.post("/auth/register", json={**body, "email": variant})
        assert again.status_code == 409, (variant, again.text)
        login = api.client.post("/auth/login", json={**body, "email": variant})
        assert login.status_code == 200, (variant, login.text)
    assert api.sql("SELECT email FROM auth_users") == [("ada@example.com",)]


def test_casefolding_goes_beyond_lower(api: Api) -> None:
    body = {"email": "strasse@example.com", "password": "long enough 1"}
    assert api.client.post("/auth/register", json=body).status_code == 201
    again = api.client.post("/auth/register", json={**body, "email": "STRAßE@example.com"})
    assert again.status_code == 409, again.text
