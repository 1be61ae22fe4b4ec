"""Error translation and the unit of work against a real, migrated core database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from auth.tables import AuthUserTable, RoleTable, UserRoleTable
from core_db import CONFIG
from db_kit.database import SQLAlchemyDatabase
from db_shared import (
    DATABASE,
    CheckViolationError,
    Database,
    DatabaseUnavailableError,
    DuplicateEntryError,
    ForeignKeyViolationError,
    NotNullViolationError,
    UnboundTokenError,
)
from payments.tables import PriceTable, ProductTable


@pytest.fixture
def db(database_at_head: Callable[..., URL]) -> Iterator[SQLAlchemyDatabase]:
    database = SQLAlchemyDatabase(CONFIG, url=database_at_head(CONFIG))
    yield database
    database.dispose_sync()


def test_database_satisfies_the_protocol(db: SQLAlchemyDatabase) -> None:
    assert isinstance(db, Database)
    assert db.name == "core"
    user_cls = db.model(AuthUserTable)
    assert issubclass(user_cls, AuthUserTable)
    assert user_cls.__table__.name == "auth_users"  # type: ignore[attr-defined]


def test_duplicate_email_names_the_column(db: SQLAlchemyDatabase) -> None:
    User = db.model(AuthUserTable)
    with db.sync_session() as s:
        s.add(User(email="ada@example.com"))
    with pytest.raises(DuplicateEntryError) as info, db.sync_session() as s:
        s.add(User(email="ada@example.com"))
    assert info.value.columns == ("email",)
    assert info.value.table == "auth_users"
    assert info.value.constraint == "uq_auth_users_email"
    assert isinstance(info.value.__cause__, Exception)  # the driver error stays visible


def test_composite_unique_names_both_columns(db: SQLAlchemyDatabase) -> None:
    User, Role, UserRole = db.model(AuthUserTable), db.model(RoleTable), db.model(UserRoleTable)
    with db.sync_session() as s:
        user, role = User(email="a@example.com"), Role(name="admin")
        s.add_all([user, role])
        s.flush()
        ids = (user.id, role.id)
    with db.sync_session() as s:
        s.add(UserRole(user_id=ids[0], role_id=ids[1]))
    with pytest.raises(DuplicateEntryError) as info, db.sync_session() as s:
        s.add(UserRole(user_id=ids[0], role_id=ids[1]))
    assert set(info.value.columns) == {"user_id", "role_id"}


def test_foreign_key_violation(db: SQLAlchemyDatabase) -> None:
    Price = db.model(PriceTable)
    with pytest.raises(ForeignKeyViolationError) as info, db.sync_session() as s:
        s.add(Price(product_id=987654, amount_minor=100, currency="EUR", interval="month"))
    assert info.value.columns == ("product_id",)


def test_not_null_violation_names_the_column(db: SQLAlchemyDatabase) -> None:
    with pytest.raises(NotNullViolationError) as info, db.sync_session() as s:
        s.execute(text("INSERT INTO products (code, name) VALUES ('x', NULL)"))
    assert info.value.columns == ("name",)


def test_check_violation(db: SQLAlchemyDatabase) -> None:
    Product, Price = db.model(ProductTable), db.model(PriceTable)
    with db.sync_session() as s:
        product = Product(code="p", name="P")
        s.add(product)
        s.flush()
        product_id = product.id
    with pytest.raises(CheckViolationError) as info, db.sync_session() as s:
        s.add(Price(product_id=product_id, amount_minor=100, currency="eur", interval="month"))
    assert info.value.constraint == "ck_prices_currency_iso"


def test_async_unit_of_work_commits_or_rolls_back(db: SQLAlchemyDatabase) -> None:
    User = db.model(AuthUserTable)

    async def scenario() -> list[str]:
        async with db.session() as s:
            s.add(User(email="kept@example.com"))

        async def add_two() -> None:
            async with db.session() as s:
                s.add(User(email="lost@example.com"))
                await s.flush()
                s.add(User(email="kept@example.com"))

        with pytest.raises(DuplicateEntryError):
            await add_two()
        async with db.session() as s:
            emails = list((await s.scalars(select(User.email).order_by(User.email))).all())
        await db.dispose()
        return emails

    # The failed unit of work left nothing behind: not even its first, valid row.
    assert asyncio.run(scenario()) == ["kept@example.com"]


def test_ping_and_unreachable_database() -> None:
    dead = SQLAlchemyDatabase(CONFIG, url="postgresql+psycopg://u:s3cret@127.0.0.1:1/nowhere")

    async def scenario() -> None:
        try:
            await dead.ping()
        finally:
            await dead.dispose()

    with pytest.raises(DatabaseUnavailableError) as info:
        asyncio.run(scenario())
    assert info.value.host == "127.0.0.1"
    assert info.value.port == 1
    assert "127.0.0.1:1" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_unbound_token_says_how_to_bind() -> None:
    error = DATABASE.unbound("my_api")
    assert isinstance(error, UnboundTokenError)
    assert "DATABASE" in str(error)
    assert "my_api" in str(error)
    assert "register_value(DATABASE" in str(error)


def test_transact_reruns_a_unit_of_work_that_lost_a_serialization_race(
    db: SQLAlchemyDatabase,
) -> None:
    """A real 40001: another connection updates the row between our read and our write."""
    from sqlalchemy import create_engine, update

    from db_shared import SerializationFailureError, transact

    Product = db.model(ProductTable)
    with db.sync_session() as s:
        s.add(Product(code="race", name="v0"))
    other = create_engine(db.engines.url)
    attempts: list[int] = []

    async def work(s: AsyncSession) -> str:
        attempts.append(1)
        await s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        name = await s.scalar(select(Product.name).where(Product.code == "race"))
        if len(attempts) == 1:
            with other.begin() as conn:  # a concurrent writer wins the race
                conn.execute(text("UPDATE products SET name = 'theirs' WHERE code = 'race'"))
        await s.execute(update(Product).where(Product.code == "race").values(name=f"{name}+ours"))
        return f"{name}+ours"

    async def scenario(limit: int) -> str:
        try:
            return await transact(db, work, attempts=limit)
        finally:
            await db.dispose()

    assert asyncio.run(scenario(3)) == "theirs+ours"
    assert len(attempts) == 2  # the first run was rolled back and rerun whole

    attempts.clear()
    with other.begin() as conn:
        conn.execute(text("UPDATE products SET name = 'reset' WHERE code = 'race'"))
    with pytest.raises(SerializationFailureError):
        asyncio.run(scenario(1))
    other.dispose()


def test_a_write_refused_as_read_only_is_unavailable_not_a_500(db: SQLAlchemyDatabase) -> None:
    """What a write meets on a server in recovery (a proxy routing to a standby, a primary
    still being promoted): SQLSTATE 25006, answered as a retryable 503."""

    def write_read_only() -> None:
        with db.sync_session() as s:
            s.execute(text("SET TRANSACTION READ ONLY"))
            s.execute(text("INSERT INTO roles (name) VALUES ('x')"))

    with pytest.raises(DatabaseUnavailableError, match="refused a write as read-only") as info:
        write_read_only()
    assert "retry shortly" in str(info.value)
