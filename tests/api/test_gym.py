"""Gym routes of bibikos_api over HTTP: memberships, the schedule, bookings under load."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from harness import Api

from auth.service import token_digest


@pytest.fixture
def gym(serve: Callable[[str], Api]) -> Api:
    return serve("bibikos_api")


def at(hours: float) -> str:
    """An ISO timestamp ``hours`` from now (negative: in the past)."""
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def member(api: Api, membership_type: str = "basic") -> dict[str, Any]:
    user = api.register()
    r = api.client.post(
        "/gym/members", headers=user["headers"], json={"membership_type": membership_type}
    )
    assert r.status_code == 201, r.text
    user["member_id"] = r.json()["id"]
    return user


def schedule(
    api: Api, admin: dict[str, Any], *, capacity: int = 10, hours: float = 24, **extra: Any
) -> dict[str, Any]:
    body = {
        "name": "Spin",
        "starts_at": at(hours),
        "ends_at": at(hours + 1),
        "capacity": capacity,
        **extra,
    }
    r = api.client.post("/gym/classes", headers=admin["headers"], json=body)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


def book(api: Api, user: dict[str, Any], class_id: int) -> httpx.Response:
    return api.client.post(f"/gym/classes/{class_id}/bookings", headers=user["headers"])


# members ---------------------------------------------------------------------------------


def test_join_once_and_read_membership(gym: Api) -> None:
    user = gym.register()
    h = user["headers"]
    missing = gym.client.get("/gym/members/me", headers=h)
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_a_member"
    assert gym.client.post("/gym/members", json={"membership_type": "vip"}).status_code == 401

    r = gym.client.post("/gym/members", headers=h, json={"membership_type": "premium"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["user_id"] == user["id"]
    assert body["email"] == user["email"]
    assert body["membership_type"] == "premium"
    assert body["is_active"] is True

    again = gym.client.post("/gym/members", headers=h, json={"membership_type": "vip"})
    assert again.status_code == 409
    assert again.json()["code"] == "already_member"
    assert gym.client.get("/gym/members/me", headers=h).json() == body
    rows = gym.sql("SELECT user_id, membership_type FROM gym_members")
    assert [tuple(row) for row in rows] == [(user["id"], "premium")]


@pytest.mark.parametrize(
    "payload", [{"membership_type": "gold"}, {"membership_type": "basic", "extra": 1}]
)
def test_join_refuses_bad_bodies(gym: Api, payload: dict[str, Any]) -> None:
    user = gym.register()
    assert gym.client.post("/gym/members", headers=user["headers"], json=payload).status_code == 422
    assert gym.sql("SELECT count(*) FROM gym_members")[0][0] == 0


def test_admin_lists_members_page_by_page(gym: Api) -> None:
    admin = gym.admin()
    members = [member(gym, kind) for kind in ("basic", "vip", "basic")]
    assert gym.client.get("/gym/members", headers=members[0]["headers"]).status_code == 403
    assert gym.client.get("/gym/members").status_code == 401

    first = gym.client.get("/gym/members", headers=admin["headers"], params={"limit": 2}).json()
    assert first["total"] == 3
    assert [m["user_id"] for m in first["items"]] == [members[0]["id"], members[1]["id"]]
    rest = gym.client.get(
        "/gym/members", headers=admin["headers"], params={"limit": 2, "offset": 2}
    ).json()
    assert [m["email"] for m in rest["items"]] == [members[2]["email"]]
    basic = gym.client.get(
        "/gym/members", headers=admin["headers"], params={"membership_type": "basic"}
    ).json()
    assert basic["total"] == 2
    too_big = gym.client.get("/gym/members", headers=admin["headers"], params={"limit": 1000})
    assert too_big.status_code == 422


# classes ---------------------------------------------------------------------------------


def test_admin_schedules_a_class(gym: Api) -> None:
    admin = gym.admin()
    created = schedule(gym, admin, capacity=12, description="Hills", instructor="Kim")
    assert created["booked"] == 0
    assert created["remaining"] == 12
    assert created["instructor"] == "Kim"
    rows = gym.sql("SELECT name, capacity, ends_at > starts_at FROM gym_classes")
    assert [tuple(row) for row in rows] == [("Spin", 12, True)]
    got = gym.client.get(f"/gym/classes/{created['id']}").json()
    assert got == created
    missing = gym.client.get("/gym/classes/999999")
    assert missing.status_code == 404
    assert missing.json()["code"] == "class_not_found"


START = "2030-01-01T10:00:00+00:00"


@pytest.mark.parametrize(
    "change",
    [
        {"ends_at": "2030-01-01T09:00:00+00:00"},  # before starts_at
        {"ends_at": START},  # equal to starts_at
        {"ends_at": "2030-01-01T10:30:00+01:00"},  # later on the clock, earlier in time
        {"starts_at": "2030-01-01T10:00:00", "ends_at": "2030-01-01T11:00:00"},  # naive
        {"capacity": 0},
        {"capacity": 1001},
        {"name": "  "},
        {"colour": "red"},
    ],
)
def test_schedule_refuses_invalid_classes(gym: Api, change: dict[str, Any]) -> None:
    admin = gym.admin()
    body = {"name": "Yoga", "starts_at": START, "ends_at": "2030-01-01T11:00:00Z", "capacity": 5}
    r = gym.client.post("/gym/classes", headers=admin["headers"], json={**body, **change})
    assert r.status_code == 422, r.text
    assert gym.sql("SELECT count(*) FROM gym_classes")[0][0] == 0


def test_only_admins_schedule(gym: Api) -> None:
    user = gym.register()
    body = {"name": "Yoga", "starts_at": at(24), "ends_at": at(25), "capacity": 5}
    assert gym.client.post("/gym/classes", headers=user["headers"], json=body).status_code == 403
    assert gym.client.post("/gym/classes", json=body).status_code == 401


def test_timetable_lists_upcoming_or_a_range_with_seats(gym: Api) -> None:
    admin = gym.admin()
    past = schedule(gym, admin, hours=-48)
    day1 = schedule(gym, admin, hours=24, capacity=2)
    day2 = schedule(gym, admin, hours=48)
    day3 = schedule(gym, admin, hours=72)
    assert book(gym, member(gym), day1["id"]).status_code == 201

    upcoming = gym.client.get("/gym/classes").json()
    assert [c["id"] for c in upcoming] == [day1["id"], day2["id"], day3["id"]]
    assert (upcoming[0]["booked"], upcoming[0]["remaining"]) == (1, 1)
    assert (upcoming[1]["booked"], upcoming[1]["remaining"]) == (0, 10)

    window = gym.client.get("/gym/classes", params={"from": at(-72), "to": at(36)}).json()
    assert [c["id"] for c in window] == [past["id"], day1["id"]]
    until = gym.client.get("/gym/classes", params={"to": at(60)}).json()
    assert [c["id"] for c in until] == [day1["id"], day2["id"]]
    assert len(gym.client.get("/gym/classes", params={"limit": 1}).json()) == 1

    backwards = gym.client.get("/gym/classes", params={"from": at(10), "to": at(5)})
    assert backwards.status_code == 422
    assert backwards.json()["code"] == "invalid_range"
    naive = gym.client.get("/gym/classes", params={"from": "2030-01-01T10:00:00"})
    assert naive.status_code == 422


# bookings --------------------------------------------------------------------------------


def test_book_cancel_and_book_again(gym: Api) -> None:
    admin = gym.admin()
    gym_class = schedule(gym, admin, capacity=3)
    cid = gym_class["id"]
    user = member(gym)

    r = book(gym, user, cid)
    assert r.status_code == 201, r.text
    booking = r.json()
    assert booking["status"] == "booked"
    assert booking["member_id"] == user["member_id"]
    assert booking["class_name"] == "Spin"
    assert booking["cancelled_at"] is None
    seats = gym.client.get(f"/gym/classes/{cid}").json()
    assert (seats["booked"], seats["remaining"]) == (1, 2)

    dup = book(gym, user, cid)
    assert dup.status_code == 409
    assert dup.json()["code"] == "already_booked"
    mine = gym.client.get("/gym/bookings/me", headers=user["headers"]).json()
    assert [b["id"] for b in mine] == [booking["id"]]

    cancelled = gym.client.delete(f"/gym/bookings/{booking['id']}", headers=user["headers"])
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancelled_at"] is not None
    row = gym.sql(
        "SELECT status, cancelled_at IS NOT NULL FROM bookings WHERE id = :i", i=booking["id"]
    )
    assert tuple(row[0]) == ("cancelled", True)
    assert gym.client.get(f"/gym/classes/{cid}").json()["remaining"] == 3
    twice = gym.client.delete(f"/gym/bookings/{booking['id']}", headers=user["headers"])
    assert twice.status_code == 409
    assert twice.json()["code"] == "already_cancelled"
    only_cancelled = gym.client.get(
        "/gym/bookings/me", headers=user["headers"], params={"status": "cancelled"}
    ).json()
    assert [b["id"] for b in only_cancelled] == [booking["id"]]

    again = book(gym, user, cid)
    assert again.status_code == 201, again.text
    assert again.json()["id"] == booking["id"]  # the same row, booked again
    assert again.json()["status"] == "booked"
    assert again.json()["cancelled_at"] is None
    rows = gym.sql("SELECT status, cancelled_at FROM bookings WHERE class_id = :c", c=cid)
    assert [tuple(r) for r in rows] == [("booked", None)]
    assert gym.client.get(f"/gym/classes/{cid}").json()["booked"] == 1


def test_only_the_owner_or_an_admin_cancels(gym: Api) -> None:
    admin = gym.admin()
    cid = schedule(gym, admin)["id"]
    owner, other = member(gym), member(gym)
    booking_id = book(gym, owner, cid).json()["id"]
    stranger = gym.client.delete(f"/gym/bookings/{booking_id}", headers=other["headers"])
    assert stranger.status_code == 404
    assert stranger.json()["code"] == "booking_not_found"
    assert gym.client.delete("/gym/bookings/999999", headers=owner["headers"]).status_code == 404
    by_admin = gym.client.delete(f"/gym/bookings/{booking_id}", headers=admin["headers"])
    assert by_admin.status_code == 200
    assert gym.sql("SELECT status FROM bookings")[0][0] == "cancelled"


def test_booking_refusals(gym: Api) -> None:
    admin = gym.admin()
    cid = schedule(gym, admin, capacity=1)["id"]
    outsider = gym.register()

    assert gym.client.post(f"/gym/classes/{cid}/bookings").status_code == 401
    r = book(gym, outsider, cid)
    assert (r.status_code, r.json()["code"]) == (403, "not_a_member")
    mine = gym.client.get("/gym/bookings/me", headers=outsider["headers"])
    assert (mine.status_code, mine.json()["code"]) == (403, "not_a_member")

    first, second = member(gym), member(gym)
    r = book(gym, first, 999999)
    assert (r.status_code, r.json()["code"]) == (404, "class_not_found")
    assert book(gym, first, 0).status_code == 422

    taken = book(gym, first, cid)
    assert taken.status_code == 201
    r = book(gym, second, cid)
    assert (r.status_code, r.json()["code"]) == (409, "class_full")

    # A cancelled booking booked again still needs a free place.
    gym.client.delete(f"/gym/bookings/{taken.json()['id']}", headers=first["headers"])
    assert book(gym, second, cid).status_code == 201
    r = book(gym, first, cid)
    assert (r.status_code, r.json()["code"]) == (409, "class_full")

    gym.sql("UPDATE gym_members SET is_active = false WHERE id = :m", m=first["member_id"])
    r = book(gym, first, schedule(gym, admin)["id"])
    assert (r.status_code, r.json()["code"]) == (403, "membership_inactive")
    assert gym.sql("SELECT count(*) FROM bookings WHERE status = 'booked'")[0][0] == 1


def test_started_classes_cannot_be_booked_or_cancelled(gym: Api) -> None:
    admin = gym.admin()
    user = member(gym)
    past = schedule(gym, admin, hours=-2)
    r = book(gym, user, past["id"])
    assert (r.status_code, r.json()["code"]) == (409, "class_started")

    soon = schedule(gym, admin)
    booking_id = book(gym, user, soon["id"]).json()["id"]
    gym.sql(
        "UPDATE gym_classes SET starts_at = now() - interval '5 minutes', "
        "ends_at = now() + interval '55 minutes' WHERE id = :c",
        c=soon["id"],
    )
    r = gym.client.delete(f"/gym/bookings/{booking_id}", headers=user["headers"])
    assert (r.status_code, r.json()["code"]) == (409, "class_started")
    assert gym.sql("SELECT status FROM bookings")[0][0] == "booked"


# concurrency -----------------------------------------------------------------------------


async def _register(base_url: str, count: int) -> list[int]:
    """``count`` users registered concurrently through the API (Argon2 makes each slow)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:

        async def one(i: int) -> int:
            creds = {"email": f"m{i}-{uuid.uuid4().hex[:6]}@example.com", "password": "pw-12345678"}
            r = await client.post("/auth/register", json=creds)
            assert r.status_code == 201, r.text
            user_id: int = r.json()["id"]
            return user_id

        return await asyncio.gather(*(one(i) for i in range(count)))


def many_members(api: Api, count: int) -> list[dict[str, str]]:
    """Bearer headers of ``count`` new gym members.

    Users register and join through the API; their sessions are issued in SQL rather than
    by POST /auth/login, which would cost a second Argon2 round per user.
    """
    ids = asyncio.run(_register(api.base_url, count))
    tokens = [secrets.token_urlsafe(32) for _ in ids]
    api.sql(
        "INSERT INTO auth_sessions (user_id, token_hash, expires_at) "
        "SELECT u, h, now() + interval '1 hour' "
        "FROM unnest(CAST(:ids AS bigint[]), CAST(:hashes AS text[])) AS t(u, h)",
        ids=ids,
        hashes=[token_digest(t) for t in tokens],
    )
    headers = [{"Authorization": f"Bearer {t}"} for t in tokens]
    joined = asyncio.run(_post_all(api.base_url, "/gym/members", headers, json={}))
    assert {r.status_code for r in joined} == {201}
    return headers


async def _post_all(
    base_url: str, path: str, headers: list[dict[str, str]], json: Any = None
) -> list[httpx.Response]:
    """POST ``path`` once per headers, all at once."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        return await asyncio.gather(*(client.post(path, headers=h, json=json) for h in headers))


def test_concurrent_bookings_never_overbook(gym: Api) -> None:
    admin = gym.admin()
    cid = schedule(gym, admin, capacity=10)["id"]
    members = many_members(gym, 50)

    responses = asyncio.run(_post_all(gym.base_url, f"/gym/classes/{cid}/bookings", members))

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 10, 409: 40}, [r.text for r in responses if r.status_code >= 500]
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"class_full"}
    booked = gym.sql(
        "SELECT count(*) FROM bookings WHERE class_id = :c AND status = 'booked'", c=cid
    )
    assert booked[0][0] == 10
    assert gym.sql("SELECT count(*) FROM bookings")[0][0] == 10
    seats = gym.client.get(f"/gym/classes/{cid}").json()
    assert (seats["booked"], seats["remaining"]) == (10, 0)


def test_concurrent_duplicate_bookings_keep_one(gym: Api) -> None:
    admin = gym.admin()
    cid = schedule(gym, admin, capacity=10)["id"]
    user = member(gym)
    responses = asyncio.run(
        _post_all(gym.base_url, f"/gym/classes/{cid}/bookings", [user["headers"]] * 10)
    )
    assert Counter(r.status_code for r in responses) == {201: 1, 409: 9}
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"already_booked"}
    assert gym.sql("SELECT count(*) FROM bookings")[0][0] == 1


def test_my_api_has_no_gym_routes(serve: Callable[[str], Api]) -> None:
    api = serve("my_api")
    user = api.register()
    assert api.client.post("/gym/classes/1/bookings", headers=user["headers"]).status_code == 404
    assert api.client.get("/gym/classes").status_code == 404
