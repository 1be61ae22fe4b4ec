"""``<PREFIX>SERVERS``: the fleet in settings, validated once at load, errors naming the
variable and the server and never a password."""

from __future__ import annotations

import json

import pytest

from core_db.settings import CoreSettings
from db_shared.errors import ConfigurationError

SECRET = "s3cr3t-pw"
MAIN = f"postgresql://app:{SECRET}@db1:5432/core"
REPLICA = f"postgresql://app:{SECRET}@db1-replica:5432/core"
OTHER = f"postgresql://app:{SECRET}@db2:5432/core"


def load(monkeypatch: pytest.MonkeyPatch, servers: object, url: str | None = MAIN) -> CoreSettings:
    if url is None:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv(
        "CORE_DB_SERVERS", servers if isinstance(servers, str) else json.dumps(servers)
    )
    return CoreSettings.load()


def refused(monkeypatch: pytest.MonkeyPatch, servers: object, url: str | None = MAIN) -> str:
    with pytest.raises(ConfigurationError) as raised:
        load(monkeypatch, servers, url)
    message = str(raised.value)
    assert SECRET not in message
    return message


def test_without_servers_one_server_on_the_main_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", MAIN)
    monkeypatch.delenv("CORE_DB_SERVERS", raising=False)
    fleet = CoreSettings.load().fleet()
    assert list(fleet) == ["main"]
    assert fleet["main"].primary.host == "db1"
    assert fleet["main"].replicas == ()


def test_one_server_with_replicas_and_its_lag_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(
        monkeypatch, {"pg1": {"primary": MAIN, "replicas": [REPLICA], "max_lag_ms": 250}}
    )
    (server,) = settings.fleet().values()
    assert (server.name, server.max_lag_ms) == ("pg1", 250)
    assert [r.host for r in server.replicas] == ["db1-replica"]
    assert server.replicas[0].drivername == "postgresql+psycopg"
    assert server.replica_names() == ("pg1_replica_1",)
    assert SECRET not in repr(settings)


def test_primary_may_be_left_out_or_be_the_only_url(monkeypatch: pytest.MonkeyPatch) -> None:
    left_out = load(monkeypatch, {"pg1": {"replicas": [REPLICA]}})
    assert left_out.fleet()["pg1"].primary.host == "db1"
    assert left_out.fleet()["pg1"].max_lag_ms == 1000
    # No DATABASE_URL: the server's primary is the main URL.
    only = load(monkeypatch, {"pg1": {"primary": MAIN, "replicas": []}}, url=None)
    assert only.resolved_url().host == "db1"


def test_multi_host_primary_with_target_session_attrs(monkeypatch: pytest.MonkeyPatch) -> None:
    multi = (
        f"postgresql://app:{SECRET}@/core?host=db1:5432&host=db2:5432"
        "&target_session_attrs=read-write"
    )
    settings = load(monkeypatch, {"pg1": {"primary": multi, "replicas": [REPLICA]}}, url=multi)
    assert settings.fleet()["pg1"].primary.query["target_session_attrs"] == "read-write"


@pytest.mark.parametrize(
    ("servers", "expected"),
    [
        ("{not json", "CORE_DB_SERVERS is not valid JSON"),
        ([], "CORE_DB_SERVERS must be a JSON object"),
        ({"Bad-Name": {}}, "server name 'Bad-Name' is not an identifier"),
        ({"pg1": "postgresql://x"}, "server 'pg1' must be an object"),
        ({"pg1": {"replica": []}}, "server 'pg1' has unknown keys ['replica']"),
        ({"pg1": {"replicas": "x"}}, "server 'pg1': replicas must be a list"),
        (
            {"pg1": {"replicas": [f"mysql://app:{SECRET}@h/core"]}},
            "server 'pg1': replica 1 uses the driver 'mysql'",
        ),
        (
            {"pg1": {"replicas": [f"postgresql://app:{SECRET}@h"]}},
            "server 'pg1': replica 1 names no database",
        ),
        ({"pg1": {"replicas": ["::::"]}}, "server 'pg1': replica 1 is not a valid database URL"),
        ({"pg1": {"max_lag_ms": 0}}, "server 'pg1': max_lag_ms must be an integer"),
        ({"pg1": {"max_lag_ms": "1s"}}, "server 'pg1': max_lag_ms must be an integer"),
        (
            {"pg1": {"primary": "postgresql://app:password@db1:5432/core"}},
            "server 'pg1': the primary URL uses a placeholder password in production",
        ),
        (
            {"pg1": {"primary": f"postgresql://app:{SECRET}@elsewhere:5432/core"}},
            "the primary of server 'pg1' (postgresql+psycopg://app:***@elsewhere:5432/core) "
            "is not what DATABASE_URL names",
        ),
        (
            {"pg1": {"replicas": [REPLICA]}, "pg2": {"primary": MAIN}},
            "servers 'pg1' and 'pg2' have their primary on the same host and port",
        ),
        (
            {"pg1": {"replicas": [REPLICA]}, "pg2": {}},
            "servers 'pg1', 'pg2' have no primary URL; only the home server may leave it out",
        ),
        (
            {"pg1": {"primary": OTHER}, "pg2": {"primary": OTHER.replace("db2", "db3")}},
            "no server's primary is what DATABASE_URL names",
        ),
    ],
)
def test_invalid_servers_name_the_variable_and_server_never_the_password(
    monkeypatch: pytest.MonkeyPatch, servers: object, expected: str
) -> None:
    message = refused(monkeypatch, servers)
    assert expected in message
    assert "CORE_DB_SERVERS" in message


def test_a_server_without_primary_needs_the_main_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # The main URL check comes first: it names the variable to set.
    message = refused(monkeypatch, {"pg1": {"replicas": [REPLICA]}}, url=None)
    assert "DATABASE_URL is not set" in message


def test_several_servers_one_of_them_home(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(
        monkeypatch,
        {"pg1": {"replicas": [REPLICA], "max_lag_ms": 300}, "pg2": {"primary": OTHER}},
    )
    fleet = settings.fleet()
    assert list(fleet) == ["pg1", "pg2"]
    assert settings.home_server() == "pg1"
    assert fleet["pg2"].primary.host == "db2"
    # A tenant database on pg2's host is pg2's, whatever its database name.
    tenant_url = fleet["pg2"].primary.set(database="tenant_acme")
    found = settings.server_of(tenant_url)
    assert found is not None
    assert found.name == "pg2"
    assert settings.server_of(fleet["pg1"].primary.set(host="nowhere")) is None
    assert settings.placement == "fewest"


def test_several_servers_need_the_main_url(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, {"pg1": {"primary": MAIN}, "pg2": {"primary": OTHER}}, url=None)
    assert "DATABASE_URL" in message


def test_placement_policy_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORE_DB_PLACEMENT", "explicit")
    assert load(monkeypatch, {"pg1": {}}).placement == "explicit"
    monkeypatch.setenv("CORE_DB_PLACEMENT", "random")
    assert "CORE_DB_PLACEMENT" in refused(monkeypatch, {"pg1": {}})
