"""Contact over HTTP, once per app: public form, admin inbox, resolving, refusals."""

from __future__ import annotations

from typing import Any

from harness import Api

GOOD = {
    "name": "Ada Lovelace",
    "email": "Ada@Example.com",
    "subject": "Billing question",
    "message": "Can I pay yearly?",
}


def _submit(api: Api, **change: Any) -> Any:
    return api.client.post("/contact", json={**GOOD, **change})


def test_public_submit_is_stored_as_new(api: Api) -> None:
    r = _submit(api, name="  Ada Lovelace  ")
    assert r.status_code == 201, r.text
    created = r.json()
    assert created == {"id": created["id"], "status": "new"}
    row = api.sql(
        "SELECT name, email, subject, message, status, resolved_at, resolved_by_id"
        " FROM contact_messages WHERE id = :i",
        i=created["id"],
    )[0]
    # Trimmed; the email's local part kept as typed, its (case-blind) domain normalised.
    assert tuple(row) == (
        "Ada Lovelace",
        "Ada@example.com",
        "Billing question",
        "Can I pay yearly?",
        "new",
        None,
        None,
    )


def test_admin_lists_and_resolves_once(api: Api) -> None:
    ids = [_submit(api, subject=f"s{i}").json()["id"] for i in range(4)]
    admin = api.admin()
    h = admin["headers"]

    page = api.client.get("/contact", headers=h, params={"limit": 3})
    assert page.status_code == 200, page.text
    body = page.json()
    assert (body["total"], body["limit"], body["offset"]) == (4, 3, 0)
    assert [m["id"] for m in body["items"]] == ids[::-1][:3]  # newest first
    assert body["items"][0]["email"] == "Ada@example.com"
    rest = api.client.get("/contact", headers=h, params={"limit": 3, "offset": 3}).json()
    assert [m["id"] for m in rest["items"]] == [ids[0]]

    r = api.client.post(f"/contact/{ids[1]}/resolve", headers=h)
    assert r.status_code == 200, r.text
    resolved = r.json()
    assert resolved["status"] == "resolved"
    assert resolved["resolved_by_id"] == admin["id"]
    assert resolved["resolved_at"] is not None
    status, resolved_at, by = api.sql(
        "SELECT status, resolved_at, resolved_by_id FROM contact_messages WHERE id = :i",
        i=ids[1],
    )[0]
    assert (status, by) == ("resolved", admin["id"])
    assert resolved_at is not None

    twice = api.client.post(f"/contact/{ids[1]}/resolve", headers=h)
    assert twice.status_code == 409
    assert twice.json()["code"] == "already_resolved"
    # The second attempt changed nothing.
    assert (
        api.sql("SELECT resolved_at FROM contact_messages WHERE id = :i", i=ids[1])[0][0]
        == resolved_at
    )

    new = api.client.get("/contact", headers=h, params={"status": "new"}).json()
    assert new["total"] == 3
    assert ids[1] not in [m["id"] for m in new["items"]]
    done = api.client.get("/contact", headers=h, params={"status": "resolved"}).json()
    assert [m["id"] for m in done["items"]] == [ids[1]]
    assert done["total"] == 1

    missing = api.client.post("/contact/999999/resolve", headers=h)
    assert missing.status_code == 404
    for params in ({"status": "open"}, {"limit": 0}, {"limit": 101}, {"offset": -1}):
        assert api.client.get("/contact", headers=h, params=params).status_code == 422, params


def test_inbox_is_admin_only(api: Api) -> None:
    message_id = _submit(api).json()["id"]
    user = api.register()
    listed = api.client.get("/contact", headers=user["headers"])
    assert listed.status_code == 403
    assert listed.json()["code"] == "forbidden"
    assert api.client.get("/contact").status_code == 401
    refused = api.client.post(f"/contact/{message_id}/resolve", headers=user["headers"])
    assert refused.status_code == 403
    assert api.client.post(f"/contact/{message_id}/resolve").status_code == 401
    assert api.sql("SELECT status FROM contact_messages")[0][0] == "new"


def test_malformed_submissions_are_422(api: Api) -> None:
    bad: list[dict[str, Any]] = [
        {"email": "not-an-email"},
        {"email": "a@b"},
        {"email": "two@@example.com"},
        {"email": "x" * 320 + "@example.com"},
        {"email": ["a@example.com"]},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 101},
        {"subject": ""},
        {"subject": "x" * 201},
        {"message": ""},
        {"message": "x" * 5001},
        {"message": "x" * 1_000_000},
        {"message": 42},
        {"message": None},
        {"status": "resolved"},
        {"website": "spam"},
    ]
    for change in bad:
        r = _submit(api, **change)
        assert r.status_code == 422, (change, r.text)
    missing = api.client.post("/contact", json={k: v for k, v in GOOD.items() if k != "email"})
    assert missing.status_code == 422
    # A NUL byte reaches PostgreSQL, which refuses it: 422, not 500.
    assert _submit(api, message="a\x00b").status_code == 422
    # The bounds themselves are accepted.
    assert _submit(api, name="x" * 100, subject="y" * 200, message="z" * 5000).status_code == 201
    assert api.sql("SELECT count(*) FROM contact_messages")[0][0] == 1


def test_unparseable_body_is_400_and_a_wrong_shape_422(api: Api) -> None:
    h = {"content-type": "application/json"}
    unparseable = api.client.post("/contact", headers=h, content=b"{not json")
    assert unparseable.status_code == 400
    assert unparseable.headers["content-type"] == "application/problem+json"
    assert unparseable.json()["code"] == "malformed_body"
    assert "not json" not in unparseable.text
    assert api.client.post("/contact", headers=h, content=b"[]").status_code == 422
    assert api.client.post("/contact", json=[GOOD]).status_code == 422
    assert api.client.post("/contact", json="text").status_code == 422
    assert api.client.post("/contact").status_code == 422
    assert api.sql("SELECT count(*) FROM contact_messages")[0][0] == 0


def test_lone_surrogate_is_422(api: Api) -> None:
    body = b'{"name":"a","email":"a@example.com","subject":"s","message":"x\\ud800"}'
    r = api.client.post("/contact", headers={"content-type": "application/json"}, content=body)
    assert r.status_code == 422
