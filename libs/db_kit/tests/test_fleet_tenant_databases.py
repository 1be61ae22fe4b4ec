"""Database-per-tenant tenants placed on two real servers (``db_tools.fleet_testing``):
the control registry on pg1 names each tenant's server and database; each unit of work
connects to that server, a moved tenant's engines are dropped and its next unit of work
goes to the new place, and one server down fails only its tenants.

Which server answered is proven with ``inet_server_port()`` inside the session.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

import bibikos_db
from bibikos_db import BibikosSettings
from bibikos_db.config import REGISTRY
from db_kit.migrations.migrator import Migrator
from db_kit.tenancy import TenantRoutedDatabase
from db_shared import DatabaseUnavailableError, transact
from db_shared.tenancy import tenant_context
from db_tools.fleet_testing import PostgresFleet

pytest_plugins = ["db_tools.fleet_testing"]
pytestmark = pytest.mark.slow

PLACEMENT = {"north": None, "east": "pg1", "south": "pg2", "west": "pg2"}


def _sql(url: URL, statement: str, **params: object) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(statement), params)
    finally:
        engine.dispose()


@dataclass
class Fleet:
    control: URL
    ports: dict[str, int]
    pg_fleet: PostgresFleet

    def database(self, **more: object) -> TenantRoutedDatabase:
        servers = {
            "pg1": {"primary": self.control.render_as_string(hide_password=False)},
            "pg2": {
                "primary": self.pg_fleet["pg2"]
                .url("postgres")
                .render_as_string(hide_password=False)
            },
        }
        settings = BibikosSettings(
            url=self.control.render_as_string(hide_password=False),
            servers=json.dumps(servers),
            multi_tenant=True,
            environment="test",
            tenant_max_engines=8,
            tenant_connection_budget=48,
            **more,
        )
        return TenantRoutedDatabase(bibikos_db.CONFIG, settings=settings)

    def make_tenant_database(self, slug: str, server: str) -> None:
        """``fleet_<slug>`` on ``server`` with a note naming the tenant and the server."""
        admin = self.pg_fleet[server].url("postgres")
        _sql(admin, f"CREATE DATABASE fleet_{slug}")
        url = admin.set(database=f"fleet_{slug}")
        _sql(url, "CREATE TABLE notes (id int PRIMARY KEY, body text)")
        _sql(url, "INSERT INTO notes VALUES (1, :b)", b=f"{slug}@{server}")


@pytest.fixture(scope="module")
def fleet(pg_fleet: PostgresFleet) -> Iterator[Fleet]:
    control = pg_fleet["pg1"].create_database("fleet_control")
    Migrator(REGISTRY, control).upgrade()
    found = Fleet(control, {n: pg_fleet[n].port for n in ("pg1", "pg2")}, pg_fleet)
    for slug, server in PLACEMENT.items():
        found.make_tenant_database(slug, server or "pg1")
        _sql(
            control,
            "INSERT INTO control.tenants (slug, name, database_name, status, server) "
            "VALUES (:s, :s, :d, 'active', :server)",
            s=slug,
            d=f"fleet_{slug}",
            server=server,
        )
    yield found
    for slug in PLACEMENT:
        for name in ("pg1", "pg2"):
            _sql(
                pg_fleet[name].url("postgres"), f"DROP DATABASE IF EXISTS fleet_{slug} WITH (FORCE)"
            )
    pg_fleet["pg1"].drop_database(control)


async def _note(db: TenantRoutedDatabase, slug: str) -> tuple[int, str]:
    with tenant_context(slug):
        async with db.session() as s:
            row = (
                await s.execute(text("SELECT inet_server_port(), body FROM notes WHERE id = 1"))
            ).one()
    return row[0], row[1]


def test_each_tenant_database_is_opened_on_its_server(fleet: Fleet) -> None:
    db = fleet.database()
    crossed: list[object] = []

    async def visit(i: int) -> None:
        slug = list(PLACEMENT)[i % len(PLACEMENT)]
        server = PLACEMENT[slug] or "pg1"
        got = await _note(db, slug)
        if got != (fleet.ports[server], f"{slug}@{server}"):
            crossed.append((slug, got))

    async def scenario() -> None:
        try:
            await asyncio.gather(*(visit(i) for i in range(200)))
        finally:
            await db.dispose()

    asyncio.run(scenario())
    assert crossed == []


def test_a_moved_tenant_is_followed_and_never_read_from_its_old_place(
    fleet: Fleet, pg_fleet: PostgresFleet
) -> None:
    """west moves from pg2 to pg1 (its data copied, the registry flipped, the old database
    dropped): its cached engines are dropped and the next unit of work runs on pg1."""
    db = fleet.database()

    async def scenario() -> None:
        try:
            assert await _note(db, "west") == (fleet.ports["pg2"], "west@pg2")
            fleet.make_tenant_database("west", "pg1")
            _sql(
                fleet.control,
                "UPDATE control.tenants SET server = 'pg1', "
                "placement_version = placement_version + 1 WHERE slug = 'west'",
            )
            _sql(pg_fleet["pg2"].url("postgres"), "DROP DATABASE fleet_west WITH (FORCE)")

            deadline = time.monotonic() + 10
            while True:
                try:
                    got = await transact(db, _note_in)
                    break
                except DatabaseUnavailableError:
                    # Only until the registry's notification has dropped the old engines.
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            assert got == (fleet.ports["pg1"], "west@pg1")
            assert await _note(db, "south") == (fleet.ports["pg2"], "south@pg2")
        finally:
            await db.dispose()

    with tenant_context("west"):
        asyncio.run(scenario())


async def _note_in(session: AsyncSession) -> tuple[int, str]:
    row = (
        await session.execute(text("SELECT inet_server_port(), body FROM notes WHERE id = 1"))
    ).one()
    return row[0], row[1]


def test_a_server_down_fails_only_its_tenants(fleet: Fleet, pg_fleet: PostgresFleet) -> None:
    db = fleet.database(connect_timeout=2)

    async def scenario() -> None:
        try:
            assert (await _note(db, "south"))[0] == fleet.ports["pg2"]
            pg_fleet["pg2"].stop()
            try:
                with pytest.raises(DatabaseUnavailableError):
                    await _note(db, "south")
                assert (await _note(db, "north"))[0] == fleet.ports["pg1"]
            finally:
                pg_fleet["pg2"].start()
            assert (await _note(db, "south"))[0] == fleet.ports["pg2"]
        finally:
            await db.dispose()

    asyncio.run(scenario())
