"""The super-admin API (/admin) of a multi-tenant my_api, over a real uvicorn and PostgreSQL.

Tenants are served by subdomain (``<slug>.example.test``); the admin routes need no tenant
and answer only a super-admin token made with ``TenantAdmin.add_super_admin``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from harness import LiveServer
from sqlalchemy.engine import URL

import core_db
from core_db.config import REGISTRY
from db_kit.database import SQLAlchemyDatabase
from db_kit.migrations.migrator import Migrator
from db_kit.migrations.schema_tenants import SchemaTenantMigrator
from db_kit.tenancy.admin import TenantAdmin
from my_api.main import MyApiRouting, create_app

ROOT = "root@example.com"
USER = {"email": "owner@example.com", "password": "long enough 1"}
PROBLEM = "application/problem+json"


@dataclass
class Admin:
    base_url: str
    db_url: URL
    client: httpx.Client  # sends the super admin's token
    token: str


@pytest.fixture
def registry_url(fresh_database: Callable[..., URL]) -> URL:
    url = fresh_database("admin_api")
    Migrator(REGISTRY, url).upgrade()
    Migrator(core_db.CONFIG, url).upgrade()
    SchemaTenantMigrator(core_db.CONFIG, url).create("acme")
    return url


@pytest.fixture
def admin(registry_url: URL) -> Iterator[Admin]:
    token = TenantAdmin(core_db.CONFIG, actor="test:setup", url=registry_url).add_super_admin(ROOT)
    database = SQLAlchemyDatabase(core_db.CONFIG, url=registry_url, multi_tenant=True)
    app = create_app(database, MyApiRouting(tenant_base_domain="example.test"))
    with (
        LiveServer(app) as base_url,
        httpx.Client(
            base_url=base_url, timeout=60, headers={"Authorization": f"Bearer {token}"}
        ) as client,
    ):
        yield Admin(base_url, registry_url, client, token)


def on(tenant: str) -> dict[str, str]:
    return {"Host": f"{tenant}.example.test"}


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def refused(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    if code is not None:
        assert body["code"] == code, body
    return body


def login(base_url: str, tenant: str) -> int:
    return httpx.post(f"{base_url}/auth/login", json=USER, headers=on(tenant)).status_code


def login_at(base_url: str, host: str) -> int:
    return httpx.post(f"{base_url}/auth/login", json=USER, headers={"Host": host}).status_code


def wait_for(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    # Workers drop cached registry answers on NOTIFY: give it a moment, never a fixed sleep.
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# --- authentication -----------------------------------------------------------------------


def test_admin_routes_answer_only_a_super_admin_token(admin: Admin) -> None:
    url = f"{admin.base_url}/admin/tenants"
    # A tenant user's session token is not an admin token, whatever tenant it comes from.
    assert httpx.post(f"{admin.base_url}/auth/register", json=USER, headers=on("acme")).is_success
    session = httpx.post(f"{admin.base_url}/auth/login", json=USER, headers=on("acme"))
    user_token = session.json()["access_token"]
    for headers in (
        {},
        {"Authorization": "Bearer sa_not-a-real-token"},
        {"Authorization": f"Bearer {admin.token}x"},
        {"Authorization": f"Bearer {user_token}"},
        {"Authorization": f"Basic {admin.token}"},
    ):
        body = refused(httpx.get(url, headers=headers), 401, "unauthenticated")
        assert admin.token not in str(body)
        assert httpx.get(url, headers=headers).headers["www-authenticate"] == "Bearer"
    assert [t["slug"] for t in ok(admin.client.get("/admin/tenants"))] == ["acme"]


def test_admin_routes_need_no_tenant_and_tenant_routes_keep_theirs(admin: Admin) -> None:
    for host in ("nope.example.test", "example.test", "other.org"):
        assert admin.client.get("/admin/tenants", headers={"Host": host}).status_code == 200
        refused(httpx.get(f"{admin.base_url}/auth/me", headers={"Host": host}), 404)


def test_single_tenant_app_serves_no_admin_routes(serve: Callable[[str], Any]) -> None:
    api = serve("my_api")
    refused(api.client.get("/admin/tenants"), 404, "not_found")
    paths = api.client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/admin")]


def test_a_removed_admins_token_stops_working_at_once(admin: Admin) -> None:
    other = ok(admin.client.post("/admin/super-admins", json={"email": "Ops@Example.com"}), 201)
    assert other["email"] == "ops@example.com"
    assert other["token"].startswith("sa_")
    as_other = {"Authorization": f"Bearer {other['token']}"}
    listed = ok(httpx.get(f"{admin.base_url}/admin/super-admins", headers=as_other))
    assert [(a["email"], a["has_token"]) for a in listed] == [
        ("ops@example.com", True),
        (ROOT, True),
    ]
    assert "token" not in str(listed).replace("has_token", "")
    # A rotated token replaces the old one at once.
    rotated = ok(admin.client.post("/admin/super-admins/ops@example.com/token"))
    refused(httpx.get(f"{admin.base_url}/admin/tenants", headers=as_other), 401)
    as_other = {"Authorization": f"Bearer {rotated['token']}"}
    assert httpx.get(f"{admin.base_url}/admin/tenants", headers=as_other).status_code == 200
    assert admin.client.delete("/admin/super-admins/ops@example.com").status_code == 204
    refused(httpx.get(f"{admin.base_url}/admin/tenants", headers=as_other), 401, "unauthenticated")
    refused(admin.client.delete("/admin/super-admins/ops@example.com"), 404)
    refused(admin.client.post("/admin/super-admins", json={"email": ROOT}), 409, "duplicate")


# --- tenant lifecycle ---------------------------------------------------------------------


def test_create_suspend_reactivate(admin: Admin) -> None:
    created = ok(
        admin.client.post(
            "/admin/tenants", json={"slug": "globex", "name": "Globex", "region": "eu"}
        ),
        201,
    )
    assert (created["slug"], created["name"], created["status"], created["region"]) == (
        "globex", "Globex", "active", "eu",
    )  # fmt: skip
    assert created["location"] == "tenant_globex"
    assert created["revision"]
    assert ok(admin.client.get("/admin/tenants/globex"))["slug"] == "globex"
    refused(admin.client.post("/admin/tenants", json={"slug": "globex"}), 409, "duplicate")
    refused(admin.client.get("/admin/tenants/initech"), 404, "not_found")
    assert ok(httpx.post(f"{admin.base_url}/auth/register", json=USER, headers=on("globex")), 201)

    suspended = ok(
        admin.client.post("/admin/tenants/globex/suspend", json={"reason": "unpaid invoice"})
    )
    assert suspended["status"] == "suspended"
    assert wait_for(lambda: login(admin.base_url, "globex") == 403)
    body = refused(
        httpx.post(f"{admin.base_url}/auth/login", json=USER, headers=on("globex")),
        403,
        "tenant_suspended",
    )
    assert "unpaid" not in body["detail"]  # the reason is for operators (the audit)
    assert login(admin.base_url, "acme") == 401  # other tenants are served as before
    # Suspending again changes nothing; with no body at all is fine too.
    assert ok(admin.client.post("/admin/tenants/globex/suspend"))["status"] == "suspended"

    assert ok(admin.client.post("/admin/tenants/globex/reactivate"))["status"] == "active"
    assert wait_for(lambda: login(admin.base_url, "globex") == 200)


def test_rename_keeps_the_data(admin: Admin) -> None:
    assert ok(httpx.post(f"{admin.base_url}/auth/register", json=USER, headers=on("acme")), 201)
    renamed = ok(admin.client.post("/admin/tenants/acme/rename", json={"slug": "initech"}))
    assert (renamed["slug"], renamed["location"]) == ("initech", "tenant_initech")
    # The row written under acme is read under the new slug's host.
    assert wait_for(lambda: login(admin.base_url, "initech") == 200)
    assert wait_for(lambda: login(admin.base_url, "acme") == 404)
    refused(admin.client.get("/admin/tenants/acme"), 404)
    refused(admin.client.post("/admin/tenants/nope/rename", json={"slug": "other"}), 404)
    ok(admin.client.post("/admin/tenants", json={"slug": "globex"}), 201)
    refused(
        admin.client.post("/admin/tenants/globex/rename", json={"slug": "initech"}),
        409,
        "duplicate",
    )


def test_clone_copies_the_templates_rows(admin: Admin) -> None:
    assert ok(httpx.post(f"{admin.base_url}/auth/register", json=USER, headers=on("acme")), 201)
    ok(admin.client.put("/admin/plugins/billing", json={"name": "Billing", "version": "1.0"}))
    ok(admin.client.put("/admin/tenants/acme/plugins/billing", json={"enabled": True}))
    clone = ok(
        admin.client.post(
            "/admin/tenants/acme/clone", json={"slug": "umbrella", "name": "Umbrella"}
        ),
        201,
    )
    assert (clone["slug"], clone["name"], clone["status"]) == ("umbrella", "Umbrella", "active")
    assert clone["plugins"] == [{"id": "billing", "enabled": True}]
    assert wait_for(lambda: login(admin.base_url, "umbrella") == 200)
    # A copy: a user registered in the clone is not in the template.
    other = {"email": "new@example.com", "password": "long enough 1"}
    assert ok(
        httpx.post(f"{admin.base_url}/auth/register", json=other, headers=on("umbrella")), 201
    )
    acme_login = httpx.post(f"{admin.base_url}/auth/login", json=other, headers=on("acme"))
    assert acme_login.status_code == 401
    refused(admin.client.post("/admin/tenants/nope/clone", json={"slug": "x"}), 404)
    refused(admin.client.post("/admin/tenants/acme/clone", json={"slug": "umbrella"}), 409)


def test_plugins_and_domains(admin: Admin) -> None:
    assert ok(admin.client.get("/admin/plugins")) == []
    put = admin.client.put("/admin/plugins/crm.sync", json={"name": "CRM sync", "version": "2.1"})
    assert ok(put) == {"id": "crm.sync", "name": "CRM sync", "version": "2.1"}
    assert ok(admin.client.get("/admin/plugins")) == [ok(put)]
    enabled = admin.client.put(
        "/admin/tenants/acme/plugins/crm.sync",
        json={"enabled": True, "configuration": {"endpoint": "https://crm.example", "batch": 50}},
    )
    assert ok(enabled)["plugins"] == [{"id": "crm.sync", "enabled": True}]
    disabled = admin.client.put("/admin/tenants/acme/plugins/crm.sync", json={"enabled": False})
    assert ok(disabled)["plugins"] == [{"id": "crm.sync", "enabled": False}]
    refused(admin.client.put("/admin/tenants/acme/plugins/unknown", json={"enabled": True}), 404)
    refused(admin.client.put("/admin/tenants/nope/plugins/crm.sync", json={"enabled": True}), 404)

    added = admin.client.post("/admin/tenants/acme/domains", json={"domain": "Acme.IO"})
    assert ok(added)["domains"] == ["acme.io"]
    primary = admin.client.post(
        "/admin/tenants/acme/domains", json={"domain": "www.acme.io", "primary": True}
    )
    assert ok(primary)["domains"] == ["www.acme.io", "acme.io"]
    ok(admin.client.post("/admin/tenants", json={"slug": "globex"}), 201)
    taken = admin.client.post("/admin/tenants/globex/domains", json={"domain": "acme.io"})
    refused(taken, 409, "duplicate")
    # The registry's domains route requests (no restart: workers drop their cache on NOTIFY).
    assert httpx.post(f"{admin.base_url}/auth/register", json=USER, headers=on("acme")).is_success
    assert wait_for(lambda: login_at(admin.base_url, "acme.io") == 200)
    assert admin.client.delete("/admin/domains/acme.io").status_code == 204
    assert wait_for(lambda: login_at(admin.base_url, "acme.io") == 404)
    refused(admin.client.delete("/admin/domains/acme.io"), 404)
    assert ok(admin.client.get("/admin/tenants/acme"))["domains"] == ["www.acme.io"]


def test_the_audit_lists_each_change_with_its_admin(admin: Admin) -> None:
    c = admin.client
    ok(c.post("/admin/tenants", json={"slug": "globex"}), 201)
    ok(c.post("/admin/tenants/globex/suspend", json={"reason": "unpaid"}))
    ok(c.post("/admin/tenants/globex/reactivate"))
    ok(c.post("/admin/tenants/globex/rename", json={"slug": "initech"}))
    ok(c.post("/admin/tenants/initech/clone", json={"slug": "umbrella"}), 201)
    ok(c.put("/admin/plugins/billing", json={"name": "Billing", "version": "1"}))
    ok(c.put("/admin/tenants/initech/plugins/billing", json={"enabled": True}))
    ok(c.put("/admin/tenants/initech/plugins/billing", json={"enabled": False}))
    ok(c.post("/admin/tenants/initech/domains", json={"domain": "initech.io"}))
    assert c.delete("/admin/domains/initech.io").status_code == 204
    ok(c.post("/admin/super-admins", json={"email": "ops@example.com"}), 201)
    ok(c.post("/admin/super-admins/ops@example.com/token"))
    assert c.delete("/admin/super-admins/ops@example.com").status_code == 204

    entries = ok(c.get("/admin/audit", params={"limit": 1000}))
    mine = [e for e in entries if e["actor"] == f"admin:{ROOT}"]
    assert [(e["action"], e["tenant"]) for e in reversed(mine)] == [
        ("create", "globex"),
        ("suspend", "globex"),
        ("reactivate", "globex"),
        ("rename", "initech"),
        ("clone", "umbrella"),
        ("plugin_add", None),
        ("plugin_enable", "initech"),
        ("plugin_disable", "initech"),
        ("domain_add", "initech"),
        ("domain_remove", "initech"),
        ("admin_add", None),
        ("admin_token", None),
        ("admin_remove", None),
    ]
    assert mine[-2]["detail"]["reason"] == "unpaid"
    assert entries[-1]["action"] == "admin_add"
    assert entries[-1]["actor"] == "test:setup"
    # Newest first, filtered by tenant, bounded by limit.
    initech = ok(c.get("/admin/audit", params={"tenant": "initech"}))
    assert [e["action"] for e in initech] == [
        "domain_remove", "domain_add", "plugin_disable", "plugin_enable", "rename",
    ]  # fmt: skip
    assert len(ok(c.get("/admin/audit", params={"limit": 2}))) == 2


# --- inputs and the document --------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/admin/tenants", {"slug": "Bad!"}),
        ("post", "/admin/tenants", {"slug": "public"}),  # reserved
        ("post", "/admin/tenants", {"slug": "pg_x"}),
        ("post", "/admin/tenants", {"slug": "a" * 41}),
        ("post", "/admin/tenants", {"slug": "ok", "name": "x" * 201}),
        ("post", "/admin/tenants", {"slug": "ok", "name": "nul\x00"}),
        ("post", "/admin/tenants", {"slug": "ok", "unknown": 1}),
        ("get", "/admin/tenants/Bad!", None),
        ("get", "/admin/tenants/core", None),
        ("post", "/admin/tenants/acme/suspend", {"reason": "a\x00b"}),
        ("post", "/admin/tenants/acme/rename", {"slug": "pg_catalog"}),
        ("post", "/admin/tenants/acme/clone", {}),
        ("put", "/admin/plugins/Bad", {"name": "x", "version": "1"}),
        ("put", "/admin/plugins/ok", {"name": "", "version": "1"}),
        ("put", "/admin/tenants/acme/plugins/ok", {"enabled": "yes please"}),
        ("put", "/admin/tenants/acme/plugins/ok", {"enabled": True, "configuration": {"k": "\x00"}}),
        ("put", "/admin/tenants/acme/plugins/ok", {"enabled": True, "configuration": {"\x00": 1}}),
        ("put", "/admin/tenants/acme/plugins/ok", {"enabled": True, "configuration": [1]}),
        ("post", "/admin/tenants/acme/domains", {"domain": "http://acme.io"}),
        ("post", "/admin/tenants/acme/domains", {"domain": "acme.io:8080"}),
        ("post", "/admin/tenants/acme/domains", {"domain": "localhost"}),
        ("delete", "/admin/domains/-bad-.io", None),
        ("post", "/admin/super-admins", {"email": "not an email"}),
        ("post", "/admin/super-admins", {"email": "a\x00@example.com"}),
        ("delete", "/admin/super-admins/nobody", None),
        ("get", "/admin/audit?tenant=Bad!", None),
        ("get", "/admin/audit?limit=0", None),
        ("get", "/admin/audit?limit=1001", None),
    ],
)  # fmt: skip
def test_bad_input_is_a_422_problem(admin: Admin, method: str, path: str, body: Any) -> None:
    response = admin.client.request(method, path, json=body)
    problem = refused(response, 422, "invalid_request")
    assert problem["errors"]


def test_non_finite_numbers_and_deep_configurations_are_refused(admin: Admin) -> None:
    url = "/admin/tenants/acme/plugins/ok"
    headers = {"content-type": "application/json"}
    for raw in ('{"enabled": true, "configuration": {"x": NaN}}',
                '{"enabled": true, "configuration": {"x": -Infinity}}',
                '{"enabled": true, "configuration": ' + '{"a": ' * 20 + "1" + "}" * 21):  # fmt: skip
        refused(admin.client.put(url, content=raw, headers=headers), 422, "invalid_request")


def test_the_document_declares_the_admin_operations(admin: Admin) -> None:
    document = httpx.get(f"{admin.base_url}/openapi.json").json()
    operations = {
        op["operationId"]: (method.upper(), path, op)
        for path, item in document["paths"].items()
        if path.startswith("/admin")
        for method, op in item.items()
    }
    assert set(operations) == {
        "admin-list-tenants", "admin-create-tenant", "admin-get-tenant", "admin-suspend-tenant",
        "admin-reactivate-tenant", "admin-rename-tenant", "admin-clone-tenant",
        "admin-list-plugins", "admin-put-plugin", "admin-set-tenant-plugin", "admin-add-domain",
        "admin-remove-domain", "admin-list-super-admins", "admin-add-super-admin",
        "admin-rotate-admin-token", "admin-remove-super-admin", "admin-list-audit",
    }  # fmt: skip
    assert "delete" not in document["paths"]["/admin/tenants/{slug}"]  # CLI only
    scheme = document["components"]["securitySchemes"]["SuperAdminToken"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    for operation_id, (method, _path, op) in operations.items():
        assert op["security"] == [{"SuperAdminToken": []}], operation_id
        declared = {int(s) for s in op["responses"] if int(s) >= 400}
        assert {401, 503} <= declared, operation_id
        if method != "GET" or "{" in _path:
            assert {404, 422} <= declared, operation_id
        if method != "GET":
            assert 409 in declared, operation_id
        for status in declared:
            media = op["responses"][str(status)]["content"][PROBLEM]
            assert media["schema"] == {"$ref": "#/components/schemas/Problem"}
        assert op["responses"]["401"]["headers"]["WWW-Authenticate"]


# --- the fuzzer -----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_fuzzer_finds_nothing_undeclared_in_the_admin_api(admin: Admin) -> None:
    from test_contract_fuzz import CHECKS, describe, fuzz_one

    document = httpx.get(f"{admin.base_url}/openapi.json").json()
    document["paths"] = {p: v for p, v in document["paths"].items() if p.startswith("/admin")}
    # Removing or re-keying the fuzzing admin would leave later operations unauthenticated.
    keep = {"/admin/super-admins/{email}", "/admin/super-admins/{email}/token"}
    document["paths"] = {p: v for p, v in document["paths"].items() if p not in keep}
    headers = {"Authorization": f"Bearer {admin.token}"}
    seen: Counter[int] = Counter()
    sent, failures = 0, []
    for result in schemathesis.openapi.from_dict(document).get_all_operations():
        operation = result.ok()
        for mode in CHECKS:
            try:
                sent += fuzz_one(admin.base_url, operation, mode, headers, seen)
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{mode.value} {operation.label}: {describe(exc)}")
    print(f"admin API: {sent} generated requests, {dict(sorted(seen.items()))}")
    assert sent > 100
    assert not failures, "\n\n".join(failures)
    # The two left out, fuzzed with a token the fuzzer cannot lose.
    spare = ok(admin.client.post("/admin/super-admins", json={"email": "spare@example.com"}), 201)
    document = httpx.get(f"{admin.base_url}/openapi.json").json()
    document["paths"] = {p: v for p, v in document["paths"].items() if p in keep}
    headers = {"Authorization": f"Bearer {spare['token']}"}
    for result in schemathesis.openapi.from_dict(document).get_all_operations():
        operation = result.ok()
        for mode in CHECKS:
            try:
                fuzz_one(admin.base_url, operation, mode, headers, seen)
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{mode.value} {operation.label}: {describe(exc)}")
    assert not failures, "\n\n".join(failures)
