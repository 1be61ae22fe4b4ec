from db_kit.alembic_env import run_env

run_env("bibikos_db.config:CONFIG")
