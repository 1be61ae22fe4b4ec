from db_kit.alembic_env import run_env

run_env("core_db.config:REGISTRY")
