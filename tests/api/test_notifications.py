"""Notifications over HTTP, once per app: fan-out, unread list, read marks, refusals."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from harness import Api

from notifications.schemas import NotificationIn


def _send(api: Api, admin: dict[str, Any], user_ids: list[int], **fields: Any) -> Any:
    body = {"type": "news", "title": "Hello", "body": "Welcome aboard", "user_ids": user_ids}
    return api.client.post("/notifications", headers=admin["headers"], json={**body, **fields})


def test_fan_out_read_one_then_read_all(api: Api) -> None:
    admin = api.admin()
    users = [api.register() for _ in range(3)]
    ids = [u["id"] for u in users]
    r = _send(api, admin, [*ids, ids[0]], data={"url": "/news/1", "n": [1, 2]})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["recipients"] == 3  # the duplicate id is delivered once
    rows = api.sql(
        "SELECT user_id, is_read, read_at FROM user_notifications"
        " WHERE notification_id = :n ORDER BY user_id",
        n=created["id"],
    )
    assert [(row[0], row[1], row[2]) for row in rows] == [(i, False, None) for i in sorted(ids)]
    assert api.sql("SELECT sender_id FROM notifications")[0][0] == admin["id"]

    for user in users:
        page = api.client.get("/notifications/unread", headers=user["headers"]).json()
        assert page["total"] == 1
        assert page["limit"] == 20
        assert page["offset"] == 0
        (item,) = page["items"]
        assert item["id"] == created["id"]
        assert item["type"] == "news"
        assert item["title"] == "Hello"
        assert item["body"] == "Welcome aboard"
        assert item["data"] == {"url": "/news/1", "n": [1, 2]}
        assert item["created_at"]
    # The admin sent it but is not a recipient.
    assert api.client.get("/notifications/unread", headers=admin["headers"]).json()["total"] == 0

    first = users[0]
    read = api.client.post(f"/notifications/{created['id']}/read", headers=first["headers"])
    assert read.status_code == 200, read.text
    assert read.json()["id"] == created["id"]
    again = api.client.post(f"/notifications/{created['id']}/read", headers=first["headers"])
    assert again.json()["read_at"] == read.json()["read_at"]  # the first read time is kept
    assert api.client.get("/notifications/unread", headers=first["headers"]).json()["total"] == 0
    is_read, read_at = api.sql(
        "SELECT is_read, read_at FROM user_notifications WHERE user_id = :u", u=first["id"]
    )[0]
    assert is_read is True
    assert read_at is not None

    # read-all touches only the caller's unread deliveries.
    second = users[1]
    _send(api, admin, [second["id"]], title="Second")
    done = api.client.post("/notifications/read-all", headers=second["headers"])
    assert done.status_code == 200
    assert done.json() == {"updated": 2}
    assert api.client.post("/notifications/read-all", headers=second["headers"]).json() == {
        "updated": 0
    }
    unread_left = api.sql(
        "SELECT user_id FROM user_notifications WHERE NOT is_read ORDER BY user_id"
    )
    assert [row[0] for row in unread_left] == [users[2]["id"]]
    assert (
        api.sql("SELECT count(*) FROM user_notifications WHERE is_read AND read_at IS NULL")[0][0]
        == 0
    )


def test_unread_pagination_newest_first(api: Api) -> None:
    admin = api.admin()
    user = api.register()
    sent = [_send(api, admin, [user["id"]], title=f"n{i}").json()["id"] for i in range(5)]
    h = user["headers"]
    first = api.client.get("/notifications/unread", headers=h, params={"limit": 2}).json()
    assert first["total"] == 5
    assert first["limit"] == 2
    assert [i["id"] for i in first["items"]] == [sent[4], sent[3]]
    last = api.client.get(
        "/notifications/unread", headers=h, params={"limit": 2, "offset": 4}
    ).json()
    assert (last["total"], last["offset"]) == (5, 4)
    assert [i["id"] for i in last["items"]] == [sent[0]]
    beyond = api.client.get("/notifications/unread", headers=h, params={"offset": 50}).json()
    assert (beyond["total"], beyond["items"]) == (5, [])
    for params in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "x"}):
        bad = api.client.get("/notifications/unread", headers=h, params=params)
        assert bad.status_code == 422, params


def test_only_admins_send_and_only_recipients_read(api: Api) -> None:
    user = api.register()
    other = api.register()
    refused = _send(api, user, [other["id"]])
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    anonymous = api.client.post(
        "/notifications", json={"type": "x", "title": "t", "body": "b", "user_ids": [1]}
    )
    assert anonymous.status_code == 401
    assert api.client.get("/notifications/unread").status_code == 401
    assert api.sql("SELECT count(*) FROM notifications")[0][0] == 0

    admin = api.admin()
    created = _send(api, admin, [user["id"]]).json()
    # No data given: SQL NULL, not the JSON value null.
    assert api.sql("SELECT data IS NULL FROM notifications")[0][0] is True
    assert (
        api.client.get("/notifications/unread", headers=user["headers"]).json()["items"][0]["data"]
        is None
    )
    # Someone else's notification, and one that does not exist, are both 404.
    for nid in (created["id"], 999_999):
        r = api.client.post(f"/notifications/{nid}/read", headers=other["headers"])
        assert r.status_code == 404
        assert r.json()["code"] == "not_found"
    assert api.sql("SELECT count(*) FROM user_notifications WHERE is_read")[0][0] == 0
    assert api.client.post("/notifications/0/read", headers=user["headers"]).status_code == 422


def test_unknown_recipient_is_409_and_writes_nothing(api: Api) -> None:
    admin = api.admin()
    user = api.register()
    r = _send(api, admin, [user["id"], 987_654_321])
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "conflict"
    assert r.json()["fields"] == ["user_id"]
    assert api.sql("SELECT count(*) FROM notifications")[0][0] == 0
    assert api.sql("SELECT count(*) FROM user_notifications")[0][0] == 0


def test_large_fan_out_in_one_request(api: Api) -> None:
    admin = api.admin()
    user = api.register()
    # 10,000 recipients is the cap; every id must exist, so make them in SQL.
    api.sql(
        "INSERT INTO auth_users (email) SELECT 'bulk' || g || '@example.com'"
        " FROM generate_series(1, 9999) AS g"
    )
    ids = [row[0] for row in api.sql("SELECT id FROM auth_users WHERE email LIKE 'bulk%'")]
    r = _send(api, admin, [user["id"], *ids])
    assert r.status_code == 201, r.text
    assert r.json()["recipients"] == 10_000
    assert api.sql("SELECT count(*) FROM user_notifications")[0][0] == 10_000
    too_many = _send(api, admin, list(range(1, 10_002)))
    assert too_many.status_code == 422
    assert api.sql("SELECT count(*) FROM notifications")[0][0] == 1


MALFORMED: list[dict[str, Any]] = [
    {"user_ids": []},
    {"user_ids": [0]},
    {"user_ids": [-1]},
    {"user_ids": ["1"]},
    {"user_ids": [1.5]},
    {"user_ids": [True]},
    {"user_ids": [2**63]},
    {"user_ids": "1"},
    {"user_ids": None},
    {"title": ""},
    {"title": "   "},
    {"title": "x" * 256},
    {"title": 5},
    {"body": "x" * 10_001},
    {"type": "has space"},
    {"type": "x" * 51},
    {"data": [1, 2]},
    {"data": "text"},
    {"data": {"blob": "x" * 20_000}},
    {"unknown": True},
]


def test_malformed_bodies_are_422(api: Api) -> None:
    admin = api.admin()
    user = api.register()
    for change in MALFORMED:
        body = {"type": "news", "title": "Hi", "body": "b", "user_ids": [user["id"]], **change}
        r = api.client.post("/notifications", headers=admin["headers"], json=body)
        assert r.status_code == 422, (change, r.text)
    # Values PostgreSQL refuses (NUL in text or JSONB) are 422 too, never 500.
    for change in ({"title": "a\x00b"}, {"data": {"k": "a\x00b"}}):
        r = _send(api, admin, [user["id"]], **change)
        assert r.status_code == 422, (change, r.text)
    assert api.sql("SELECT count(*) FROM notifications")[0][0] == 0


def test_unparseable_body_is_400_and_a_wrong_shape_422(api: Api) -> None:
    admin = api.admin()
    h = {**admin["headers"], "content-type": "application/json"}
    assert api.client.post("/notifications", headers=h, content=b"{not json").status_code == 400
    assert api.client.post("/notifications", headers=h, content=b"[]").status_code == 422
    listed = api.client.post("/notifications", headers=admin["headers"], json=[{"type": "x"}])
    assert listed.status_code == 422
    assert api.client.post("/notifications", headers=admin["headers"]).status_code == 422


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "\ud800"])
def test_data_refuses_what_jsonb_cannot_store(value: object) -> None:
    body = {"type": "x", "title": "t", "body": "b", "user_ids": [1], "data": {"k": value}}
    with pytest.raises(pydantic.ValidationError, match="NaN, Infinity or lone surrogates"):
        NotificationIn.model_validate(body)
