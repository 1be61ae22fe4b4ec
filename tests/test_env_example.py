"""`.env.example` lists every setting the code reads, and nothing the code does not read.

Settings are the pydantic-settings classes of every workspace package (each field's
variable: its alias, or the class's prefix and the field name) plus the few variables read
with ``os.environ`` directly. Tool- and test-only variables are listed apart, below.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pydantic_settings import BaseSettings

from api_kit.routing import TenantRoutingSettings
from auth.throttle import LoginThrottleSettings
from auth.webhooks import WebhookSettings
from bibikos_api.main import BibikosApiRouting
from bibikos_db.settings import BibikosSettings
from core_db.settings import CoreSettings
from db_tools.remote import RemoteSettings
from my_api.main import MyApiRouting

ROOT = Path(__file__).resolve().parents[1]
# Each concrete settings class an app, a db lib or a tool reads (abstract bases left out).
SETTINGS: tuple[type[BaseSettings], ...] = (
    CoreSettings,
    BibikosSettings,
    MyApiRouting,
    BibikosApiRouting,
    WebhookSettings,
    LoginThrottleSettings,
)
# The migration container's own settings, in run_migrations/.env.example.
REMOTE_SETTINGS: tuple[type[BaseSettings], ...] = (RemoteSettings,)
# Read with os.environ by the code, never meant for a .env file: the test plugin's and the
# tools' own switches, and what uv sets.
NOT_FOR_ENV_FILES = frozenset(
    {
        "TEST_DATABASE_URL",
        "DB_TEST_NO_DOCKER",
        "DB_TEST_POSTGRES_IMAGE",
        "SSL_CERT_FILE",
        "UV",
        "APP_ENV",
    }
)


def variables_of(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix") or "").upper()
    found = set()
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        if choices:
            found.add(str(choices[0]).upper())
        elif isinstance(alias, str):
            found.add(alias.upper())
        else:
            found.add(f"{prefix}{name}".upper())
    return found


def environ_reads() -> set[str]:
    """Names read with os.environ.get("X") / os.environ["X"] in libs/*/src and apps/*/src."""
    found = set()
    for path in [*ROOT.glob("libs/*/src/**/*.py"), *ROOT.glob("apps/*/src/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            target = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in {"get", "getenv"} and node.args:
                    owner = ast.unparse(node.func.value)
                    if owner in {"os.environ", "os"}:
                        target = node.args[0]
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                target = node.slice
            if isinstance(target, ast.Constant) and isinstance(target.value, str):
                found.add(target.value)
    return found


def listed(path: str = ".env.example") -> set[str]:
    text = (ROOT / path).read_text(encoding="utf-8")
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))


def test_every_setting_is_listed() -> None:
    expected = set().union(*(variables_of(cls) for cls in SETTINGS))
    expected |= environ_reads() - NOT_FOR_ENV_FILES
    missing = sorted(expected - listed())
    assert not missing, f".env.example lacks {missing}"


def test_nothing_listed_is_unknown() -> None:
    known = set().union(*(variables_of(cls) for cls in SETTINGS)) | environ_reads()
    unknown = sorted(listed() - known)
    assert not unknown, f".env.example lists settings no code reads: {unknown}"


def test_abstract_bases_add_nothing_unlisted() -> None:
    # The routing base's fields reach the apps through their subclasses.
    assert {f.upper() for f in TenantRoutingSettings.model_fields} <= {
        v.removeprefix("MY_API_") for v in variables_of(MyApiRouting)
    }


def test_the_migration_containers_settings_are_listed_in_its_example() -> None:
    expected = set().union(*(variables_of(cls) for cls in REMOTE_SETTINGS))
    missing = sorted(expected - listed("run_migrations/.env.example"))
    assert not missing, f"run_migrations/.env.example lacks {missing}"
