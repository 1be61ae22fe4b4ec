"""Auth over HTTP, once per app."""

from __future__ import annotations

from harness import Api


def test_register_login_me_logout(api: Api) -> None:
    user = api.register("Ada@Example.com")
    assert user["email"] == "ada@example.com"
    assert user["roles"] == ["user"]
    me = api.client.get("/auth/me", headers=user["headers"])
    assert me.status_code == 200
    assert me.json()["id"] == user["id"]
    assert api.client.post("/auth/logout", headers=user["headers"]).status_code == 204
    assert api.client.get("/auth/me", headers=user["headers"]).status_code == 401


def test_duplicate_registration_is_409_naming_the_field(api: Api) -> None:
    body = {"email": "dup@example.com", "password": "long enough 1"}
    assert api.client.post("/auth/register", json=body).status_code == 201
    again = api.client.post("/auth/register", json={**body, "email": "DUP@example.com"})
    assert again.status_code == 409
    assert again.json()["fields"] == ["email"]
    assert "email" in again.json()["detail"]
    assert api.sql("SELECT count(*) FROM auth_users")[0][0] == 1


def test_wrong_password_and_missing_token(api: Api) -> None:
    api.register("bob@example.com", password="right password")
    r = api.client.post("/auth/login", json={"email": "bob@example.com", "password": "wrong"})
    assert r.status_code == 401
    assert api.client.get("/auth/me").status_code == 401
    bad = api.client.get("/auth/me", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401


def test_profile_and_providers(api: Api) -> None:
    user = api.register()
    h = user["headers"]
    assert api.client.get("/auth/me/profile", headers=h).json() is None
    r = api.client.put(
        "/auth/me/profile", headers=h, json={"display_name": "Ada", "locale": "en-GB"}
    )
    assert r.status_code == 200, r.text
    assert api.client.get("/auth/me/profile", headers=h).json()["display_name"] == "Ada"
    link = {"provider": "google", "provider_user_id": "g-1"}
    assert api.client.post("/auth/me/providers", headers=h, json=link).status_code == 201
    other = api.register()
    dup = api.client.post("/auth/me/providers", headers=other["headers"], json=link)
    assert dup.status_code == 409
    assert set(dup.json()["fields"]) == {"provider", "provider_user_id"}
    assert len(api.client.get("/auth/me/providers", headers=h).json()) == 1


def test_role_check_refuses_non_admin(api: Api) -> None:
    user = api.register()
    admin = api.admin()
    target = api.register()
    url = f"/auth/users/{target['id']}/roles"
    assert api.client.post(url, headers=user["headers"], json={"role": "coach"}).status_code == 403
    assert api.client.post(url, headers=admin["headers"], json={"role": "coach"}).status_code == 204
    login = api.client.get("/auth/me", headers=target["headers"]).json()
    assert login["roles"] == ["coach", "user"]
    missing = api.client.post(
        "/auth/users/999999/roles", headers=admin["headers"], json={"role": "x1"}
    )
    assert missing.status_code == 404
