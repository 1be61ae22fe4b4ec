"""Which database libraries this environment has: the ``db_kit.databases`` entry points."""

from __future__ import annotations

from importlib.metadata import entry_points

from db_kit.config import DatabaseConfig

ENTRY_POINT_GROUP = "db_kit.databases"

__all__ = ["ENTRY_POINT_GROUP", "discover"]


def discover() -> dict[str, DatabaseConfig]:
    """Every database config installed in this environment, by name."""
    found: dict[str, DatabaseConfig] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        config = ep.load()
        if not isinstance(config, DatabaseConfig):
            continue
        found[config.name] = config
    return dict(sorted(found.items()))
