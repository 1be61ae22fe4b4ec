"""The shared tables of core_db and bibikos_db are one definition, in the models and live.

Each feature module defines its tables once as mixins; both db libs compose them. These
tests prove the two results are identical: the PostgreSQL DDL compiled from each
``MetaData``, and the schema each database actually holds after its migrations ran.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Enum, Table, UniqueConstraint, create_engine, inspect
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Inspector
from sqlalchemy.schema import CreateIndex, CreateTable

import bibikos_db
import bibikos_db.models
import core_db
import core_db.models
from db_kit.models import new_metadata

SHARED_TABLES = frozenset(
    {
        "auth_users",
        "user_profiles",
        "auth_providers",
        "roles",
        "user_roles",
        "auth_sessions",
        "auth_webhook_events",
        "auth_login_failures",
        "payment_customers",
        "subscriptions",
        "products",
        "prices",
        "notifications",
        "user_notifications",
        "contact_messages",
    }
)
GYM_TABLES = frozenset({"gym_members", "gym_classes", "bookings"})


def _shared_table_names() -> set[str]:
    return set(core_db.models.metadata.tables) & set(bibikos_db.models.metadata.tables)


def _table_ddl(table: Table) -> str:
    return str(CreateTable(table).compile(dialect=postgresql.dialect())).strip()


def _index_ddl(table: Table) -> list[str]:
    return sorted(
        str(CreateIndex(ix).compile(dialect=postgresql.dialect())).strip() for ix in table.indexes
    )


def _enum_types(table: Table) -> dict[str, tuple[str, ...]]:
    return {
        col.type.name: tuple(col.type.enums)
        for col in table.columns
        if isinstance(col.type, Enum) and col.type.name
    }


# --- from the models ---------------------------------------------------------------------


def test_exactly_the_feature_tables_are_shared() -> None:
    assert _shared_table_names() == SHARED_TABLES


def test_bibikos_models_add_gym_tables_core_lacks() -> None:
    core_tables = set(core_db.models.metadata.tables)
    bibikos_tables = set(bibikos_db.models.metadata.tables)
    assert bibikos_tables >= GYM_TABLES
    assert not GYM_TABLES & core_tables
    # Nothing else differs: bibikos is the shared tables plus its gym tables.
    assert bibikos_tables - core_tables == GYM_TABLES


@pytest.mark.parametrize("name", sorted(SHARED_TABLES))
def test_model_ddl_is_identical(name: str) -> None:
    core_table = core_db.models.metadata.tables[name]
    bibikos_table = bibikos_db.models.metadata.tables[name]
    # Two definitions, not one object reused by both metadatas.
    assert core_table is not bibikos_table

    core_ddl = _table_ddl(core_table)
    assert core_ddl.startswith(f"CREATE TABLE {name} (")
    assert core_ddl == _table_ddl(bibikos_table)
    assert _index_ddl(core_table) == _index_ddl(bibikos_table)
    assert _enum_types(core_table) == _enum_types(bibikos_table)


def test_model_ddl_comparison_sees_a_difference() -> None:
    """The comparison above is not vacuous: a changed column shows in the compiled DDL."""
    original = core_db.models.metadata.tables["roles"]
    altered = original.to_metadata(new_metadata())
    altered.c.name.nullable = not altered.c.name.nullable
    assert _table_ddl(original) == _table_ddl(original.to_metadata(new_metadata()))
    assert _table_ddl(original) != _table_ddl(altered)


# --- from the live databases -------------------------------------------------------------


def _by_name(items: list[dict[str, Any]], *keys: str) -> list[tuple[Any, ...]]:
    return sorted(
        (tuple(_hashable(item.get(k)) for k in keys) for item in items), key=lambda t: str(t)
    )


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    return value


def describe_table(insp: Inspector, name: str) -> dict[str, Any]:
    """Everything the inspector reports about one table, in a comparable form."""
    return {
        "columns": [
            (
                c["name"],
                str(c["type"]),
                c["nullable"],
                c.get("default"),
                _hashable(c.get("identity")),
            )
            for c in insp.get_columns(name)
        ],
        "primary_key": _hashable(insp.get_pk_constraint(name)),
        "foreign_keys": _by_name(
            insp.get_foreign_keys(name),
            "name",
            "constrained_columns",
            "referred_schema",
            "referred_table",
            "referred_columns",
            "options",
        ),
        "unique_constraints": _by_name(insp.get_unique_constraints(name), "name", "column_names"),
        "check_constraints": _by_name(insp.get_check_constraints(name), "name", "sqltext"),
        "indexes": _by_name(
            insp.get_indexes(name),
            "name",
            "column_names",
            "unique",
            "expressions",
            "dialect_options",
            "duplicates_constraint",
        ),
    }


@pytest.fixture
def live_schemas(
    database_at_head: Callable[..., URL],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reflection of a fresh core and a fresh bibikos database, both migrated to head."""
    described = []
    for config in (core_db.CONFIG, bibikos_db.CONFIG):
        engine = create_engine(database_at_head(config))
        try:
            insp = inspect(engine)
            tables = set(insp.get_table_names())
            described.append(
                {
                    "tables": tables,
                    "enums": {e["name"]: tuple(e["labels"]) for e in insp.get_enums()},
                    "shared": {n: describe_table(insp, n) for n in SHARED_TABLES & tables},
                }
            )
        finally:
            engine.dispose()
    return described[0], described[1]


def test_live_databases_hold_identical_shared_tables(
    live_schemas: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    core, bibikos = live_schemas

    assert core["tables"] & bibikos["tables"] >= SHARED_TABLES
    assert (core["tables"] & bibikos["tables"]) - {"alembic_version"} == SHARED_TABLES
    assert bibikos["tables"] >= GYM_TABLES
    assert not GYM_TABLES & core["tables"]

    for name in sorted(SHARED_TABLES):
        core_table, bibikos_table = core["shared"][name], bibikos["shared"][name]
        assert core_table["columns"], f"{name}: reflection found no columns"
        assert core_table["primary_key"], f"{name}: reflection found no primary key"
        for aspect in core_table:
            assert core_table[aspect] == bibikos_table[aspect], f"{name}.{aspect} differs"

    # Enum types used by shared tables exist in both databases with the same labels.
    shared_enums: dict[str, tuple[str, ...]] = {}
    for name in SHARED_TABLES:
        shared_enums.update(_enum_types(core_db.models.metadata.tables[name]))
    for enum_name, labels in shared_enums.items():
        assert core["enums"].get(enum_name) == labels
        assert bibikos["enums"].get(enum_name) == labels


def test_live_shared_tables_match_the_models(
    live_schemas: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """The reflected schema carries the model's constraint names (naming convention)."""
    core, _ = live_schemas
    for name in sorted(SHARED_TABLES):
        table = core_db.models.metadata.tables[name]
        live = core["shared"][name]
        assert [c[0] for c in live["columns"]] == [c.name for c in table.columns]
        assert dict(live["primary_key"])["name"] == table.primary_key.name
        assert {fk[0] for fk in live["foreign_keys"]} == {
            fk.name for fk in table.foreign_key_constraints
        }
        # Indexes PostgreSQL creates behind UNIQUE constraints are the constraints' own.
        live_indexes = {ix[0] for ix in live["indexes"] if ix[-1] is None}
        assert live_indexes == {ix.name for ix in table.indexes}
        assert {uq[0] for uq in live["unique_constraints"]} == {
            c.name for c in table.constraints if isinstance(c, UniqueConstraint)
        }
