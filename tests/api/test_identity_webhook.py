"""Identity sync webhook over HTTP, once per app: Standard Webhooks signatures, replays,
ordering. (Routing events to tenant schemas is in test_tenancy_http.py.)"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from harness import Api

from auth.webhooks import sign

URL = "/auth/webhooks/identity"
SECRET = "raw secret, used as its bytes"
WHSEC = "whsec_" + base64.b64encode(b"sixteen byte key").decode()


@pytest.fixture(autouse=True)
def webhook_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AUTH_WEBHOOK_SECRET", SECRET)
    return SECRET


def event(
    event_id: str,
    kind: str,
    email: str | None = "ext@example.com",
    occurred_at: datetime | None = None,
    **data: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": event_id,
        "type": f"identity.{kind}",
        "tenant_id": "acme",
        "data": {"id": "ext-42", **({"email": email} if email else {}), **data},
    }
    if occurred_at is not None:
        body["occurred_at"] = occurred_at.isoformat()
    return body


def signed(
    payload: dict[str, Any], *, secret: str = SECRET, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    stamp = int(time.time()) if timestamp is None else timestamp
    headers = sign(secret, str(payload.get("id", "evt")), stamp, body)
    return body, {**headers, "content-type": "application/json"}


def deliver(api: Api, payload: dict[str, Any], **kwargs: Any) -> httpx.Response:
    body, headers = signed(payload, **kwargs)
    return api.client.post(URL, content=body, headers=headers)


def users(api: Api) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in api.sql("SELECT email, is_active FROM auth_users ORDER BY id")]


def test_a_replayed_created_after_deleted_does_not_resurrect_the_user(api: Api) -> None:
    created_body, created_headers = signed(event("evt-1", "created", "old@example.com"))
    assert api.client.post(URL, content=created_body, headers=created_headers).status_code == 200
    deleted = deliver(api, event("evt-2", "deleted", None))
    assert deleted.status_code == 200, deleted.text
    assert users(api) == [("old@example.com", False)]

    # The exact signed bytes again, within the five minutes: the id was seen.
    replay = api.client.post(URL, content=created_body, headers=created_headers)
    assert replay.status_code == 200, replay.text
    assert replay.json()["status"] == "duplicate"
    assert users(api) == [("old@example.com", False)]

    # Captured earlier (its signed timestamp is old): refused before anything is read.
    stale_body, stale_headers = signed(
        event("evt-0", "created", "old@example.com"), timestamp=int(time.time()) - 6 * 60
    )
    stale = api.client.post(URL, content=stale_body, headers=stale_headers)
    assert stale.status_code == 401
    assert stale.json()["code"] == "timestamp_outside_tolerance"
    assert users(api) == [("old@example.com", False)]
    assert api.sql("SELECT event_id, applied FROM auth_webhook_events ORDER BY id") == [
        ("evt-1", True),
        ("evt-2", True),
    ]


def test_an_older_event_never_overwrites_a_newer_state(api: Api) -> None:
    t0 = datetime.now(UTC) - timedelta(hours=1)
    assert deliver(api, event("a", "created", "v1@example.com", t0)).status_code == 200
    newer = deliver(api, event("b", "updated", "v3@example.com", t0 + timedelta(minutes=3)))
    assert newer.json()["status"] == "applied"
    older = deliver(api, event("c", "updated", "v2@example.com", t0 + timedelta(minutes=2)))
    assert older.status_code == 200, older.text
    assert older.json()["status"] == "ignored_older"
    assert users(api) == [("v3@example.com", True)]

    assert deliver(api, event("d", "deleted", None, t0 + timedelta(minutes=10))).status_code == 200
    # A late created/updated from before the delete, or at the same instant, changes nothing.
    for event_id, minutes in (("e", 9), ("f", 10)):
        late = deliver(
            api, event(event_id, "created", "v2@example.com", t0 + timedelta(minutes=minutes))
        )
        assert late.json()["status"] == "ignored_older", late.text
    assert users(api) == [("v3@example.com", False)]

    # A genuinely newer created brings the identity back.
    back = deliver(api, event("g", "created", "v4@example.com", t0 + timedelta(minutes=11)))
    assert back.json()["status"] == "applied"
    assert users(api) == [("v4@example.com", True)]


def test_a_delete_that_arrives_first_still_wins(api: Api) -> None:
    t0 = datetime.now(UTC) - timedelta(minutes=30)
    first = deliver(api, event("del", "deleted", None, t0 + timedelta(minutes=1)))
    assert first.json() == {"status": "applied", "user_id": None}
    late = deliver(api, event("new", "created", "ghost@example.com", t0))
    assert late.json()["status"] == "ignored_older"
    assert users(api) == []


def test_the_signed_timestamp_orders_events_without_occurred_at(api: Api) -> None:
    now = int(time.time())
    assert deliver(api, event("x1", "created", "a@example.com"), timestamp=now).status_code == 200
    assert deliver(api, event("x2", "deleted", None), timestamp=now + 2).status_code == 200
    late = deliver(api, event("x3", "updated", "b@example.com"), timestamp=now + 1)
    assert late.json()["status"] == "ignored_older"
    assert users(api) == [("a@example.com", False)]


def test_webhook_emails_are_normalised_like_registrations(api: Api) -> None:
    api.register("ada@example.com")
    linked = deliver(api, event("n1", "created", "\uff41\uff44\uff41@EXAMPLE.com"))
    assert linked.status_code == 200, linked.text
    assert users(api) == [("ada@example.com", True)]


def test_signature_refusals(api: Api) -> None:
    payload = event("evt-r", "created")
    body, headers = signed(payload)

    def post(content: bytes = body, **change: str | None) -> httpx.Response:
        sent = {k: v for k, v in {**headers, **change}.items() if v is not None}
        return api.client.post(URL, content=content, headers=sent)

    refusals = [
        post(**{"webhook-signature": None}),
        post(**{"webhook-id": None}),
        post(**{"webhook-timestamp": None}),
        post(content=body.replace(b"ext@", b"evil@")),  # body changed
        post(**{"webhook-id": "evt-other"}),  # id changed
        post(**{"webhook-timestamp": str(int(headers["webhook-timestamp"]) - 1)}),
        post(**{"webhook-signature": "v1," + base64.b64encode(b"0" * 32).decode()}),
        post(**{"webhook-signature": "v1"}),
        post(**{"webhook-signature": "v1,!!!not base64"}),
        post(**{"webhook-signature": "v2," + headers["webhook-signature"][3:]}),
        post(**{"webhook-timestamp": "1e9"}),
        post(**{"webhook-timestamp": "-5"}),
        post(**{"webhook-id": "x" * 300}),
        post(content=b"\xff\xfe" + body),
        api.client.post(URL, content=body, headers=signed(payload, secret="another")[1]),
    ]
    for response in refusals:
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "bad_signature"
        assert set(response.json()) == {"type", "title", "status", "code", "detail"}
        assert response.headers["www-authenticate"] == "Bearer"

    future = signed(payload, timestamp=int(time.time()) + 10 * 60)
    ahead = api.client.post(URL, content=future[0], headers=future[1])
    assert ahead.status_code == 401
    assert ahead.json()["code"] == "timestamp_outside_tolerance"

    mismatch_body = json.dumps(payload).encode()
    mismatch = sign(SECRET, "evt-not-the-body-id", int(time.time()), mismatch_body)
    r = api.client.post(URL, content=mismatch_body, headers=mismatch)
    assert r.status_code == 422
    assert r.json()["code"] == "event_id_mismatch"

    for bad in (
        {**payload, "occurred_at": "9999-12-31T20:00:00-14:00"},
        {**payload, "occurred_at": "2030-01-01T10:00:00"},  # naive
        {**payload, "occurred_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()},
        {**payload, "type": "identity.merged"},
    ):
        r = deliver(api, bad)
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "invalid_event"
    assert users(api) == []
    assert api.sql("SELECT count(*) FROM auth_webhook_events")[0][0] == 0


def test_whsec_secrets_are_base64(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_WEBHOOK_SECRET", WHSEC)
    assert deliver(api, event("w1", "created"), secret=WHSEC).status_code == 200
    # Signed with the prefixed text as raw bytes instead: refused.
    body = json.dumps(event("w2", "created")).encode()
    stamp = int(time.time())
    raw = sign(WHSEC.removeprefix("whsec_") + "=", "w2", stamp, body)  # base64 text, not key
    assert api.client.post(URL, content=body, headers=raw).status_code == 401
    assert users(api) == [("ext@example.com", True)]


def test_no_secret_configured_is_404(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTH_WEBHOOK_SECRET")
    r = deliver(api, event("n", "created"))
    assert r.status_code == 404
    assert r.json()["code"] == "webhook_disabled"
