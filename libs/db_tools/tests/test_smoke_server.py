import os

from sqlalchemy import create_engine, text

from db_tools.testing import PostgresServer


def test_run_uses_its_own_databases(postgres_server: PostgresServer) -> None:
    core = os.environ["DATABASE_URL"]
    assert "/run_core_" in core
    assert ".data" not in core
    engine = create_engine(postgres_server.admin_url)
    with engine.connect() as conn:
        assert conn.execute(text("select 1")).scalar() == 1
    engine.dispose()
