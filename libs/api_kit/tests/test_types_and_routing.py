"""api_kit's validated types and the order of settings-built tenant resolvers (no database)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from api_kit.app import tenant_reason_class
from api_kit.routing import TenantRoutingSettings
from api_kit.tenancy import resolve_tenant
from api_kit.types import MAX_DATETIME, MIN_DATETIME, AwareDatetime, StrictId, StrictInt4
from db_shared.tenancy import InvalidTenantError

DATETIME: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31T20:00:00-14:00",  # year 10000 in UTC
        "0001-01-01T00:00:00+14:00",  # year 0 in UTC
        "9999-12-31T00:00:00+00:00",  # loads as year 10000 in a session east of UTC
        "0001-01-01T12:00:00+00:00",  # loads as year 0 in a session west of UTC
        "2030-01-01T10:00:00",  # naive
    ],
)
def test_datetimes_that_cannot_round_trip_are_refused(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        DATETIME.validate_python(value)
    assert value not in str(info.value.errors(include_input=False))


def test_datetimes_are_normalised_to_utc_within_the_bounds() -> None:
    assert DATETIME.validate_python("2030-01-01T12:00:00+02:00") == datetime(
        2030, 1, 1, 10, tzinfo=UTC
    )
    assert DATETIME.validate_python(MAX_DATETIME.isoformat()) == MAX_DATETIME
    assert DATETIME.validate_python(MIN_DATETIME.isoformat()) == MIN_DATETIME


@pytest.mark.parametrize("value", [True, "1", 1.0, 2**31, -(2**31) - 1])
def test_strict_int4_refuses_coercions_and_overflow(value: object) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(StrictInt4).validate_python(value)


@pytest.mark.parametrize("value", [True, "1", 0, 2**63])
def test_strict_id(value: object) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(StrictId).validate_python(value)


def test_reason_classes_reveal_no_detail() -> None:
    assert tenant_reason_class("schema tenant_x is missing") == "schema_missing"
    assert tenant_reason_class("its last migration failed: boom at 10.0.0.1") == "migration_failed"
    assert tenant_reason_class("no answer within 5 s") == "timeout"
    assert tenant_reason_class("Cannot reach PostgreSQL at db:5432") == "database_unavailable"


def scope(host: str | None = "app.test", **headers: str) -> dict[str, Any]:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if host is not None:
        raw.append((b"host", host.encode()))
    return {"type": "http", "path": "/", "headers": raw}


def slug_of(settings: TenantRoutingSettings, request: dict[str, Any]) -> str | None:
    tenant = asyncio.run(resolve_tenant(settings.resolver(), request))
    return tenant.slug if tenant else None


def test_the_default_answers_only_when_nothing_names_a_tenant() -> None:
    settings = TenantRoutingSettings(
        tenant_hosts={"acme": ["acme.test"]},
        tenant_base_domain="example.test",
        tenant_default="fallback",
        tenant_header="X-Tenant",
    )
    assert slug_of(settings, scope("acme.test")) == "acme"
    assert slug_of(settings, scope("globex.example.test")) == "globex"
    assert slug_of(settings, scope("app.test", **{"X-Tenant": "initech"})) == "initech"
    assert slug_of(settings, scope("app.test")) == "fallback"
    assert slug_of(settings, scope(None)) is None  # no Host: unknown, not the default
    with pytest.raises(InvalidTenantError):
        slug_of(settings, scope("app.test", **{"X-Tenant": "Bad!"}))


def test_a_default_alone_is_a_routing() -> None:
    assert slug_of(TenantRoutingSettings(tenant_default="only"), scope()) == "only"
