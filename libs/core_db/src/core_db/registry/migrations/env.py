from db_kit.migrations.env import run_env

run_env("core_db.config:REGISTRY")
