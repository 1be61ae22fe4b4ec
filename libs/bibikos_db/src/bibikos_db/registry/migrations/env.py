from db_kit.migrations.env import run_env

run_env("bibikos_db.config:REGISTRY")
