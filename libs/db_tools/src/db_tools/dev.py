"""The development database: the tools, never the runtime, start the embedded PostgreSQL.

With ``ENVIRONMENT=development`` and no URL set for a database, ``provide_url`` starts the
embedded server (data under ``<workspace>/.data/postgres``, one stable port), creates that
database's own database on it and exports its URL in the URL variable, so everything the
command does next (and any process it starts) reads it like a configured URL. Anything
other than an explicit development environment leaves the settings alone: a missing URL
is then the runtime's clear error.
"""

from __future__ import annotations

import os

from sqlalchemy.engine import URL, make_url

from db_kit.config import DatabaseConfig
from db_kit.settings import DatabaseSettings, workspace_root
from db_tools.embedded import EmbeddedPostgres

__all__ = ["describe", "embedded_server", "provide_url", "provided_url"]

# URL variable -> the embedded URL this process exported for it.
_provided: dict[str, URL] = {}


def embedded_server(settings: DatabaseSettings) -> EmbeddedPostgres:
    """The development server the settings' ``embedded_data_dir`` names (not started)."""
    return EmbeddedPostgres(workspace_root() / settings.embedded_data_dir)


def provide_url(db: DatabaseConfig) -> URL | None:
    """In development with no URL set: start the embedded server, export the database's URL.

    Returns that URL, or None when nothing was done (a URL is set, or not development).
    """
    settings = db.settings()
    if not settings.is_development or settings.validated_url() is not None:
        return None
    url = make_url(embedded_server(settings).ensure_database(settings.embedded_database))
    os.environ[settings.url_variable] = url.render_as_string(hide_password=False)
    _provided[settings.url_variable] = url
    db.reset()
    if db.tenancy is not None:
        db.tenancy.registry.reset()
    return url


def provided_url(db: DatabaseConfig) -> URL | None:
    """The embedded URL ``provide_url`` exported for ``db`` in this process, if it did."""
    return _provided.get(db.settings_class.url_variable)


def describe(settings: DatabaseSettings) -> str:
    """Where a database is, password masked; the embedded server is named as such. Never
    starts a server."""
    url = settings.validated_url()
    server = embedded_server(settings)
    where = f"embedded PostgreSQL in {settings.embedded_data_dir}"
    running = server.running_port()
    saved = server.saved_port()
    if url is not None:
        shown = url.render_as_string(hide_password=True)
        embedded = (
            url.host == "127.0.0.1"
            and url.port is not None
            and url.port in {running, saved}
            and url.username == "postgres"
        )
        if not embedded:
            return shown
        return f"{shown} ({where})" if running is not None else f"{shown} ({where}, not running)"
    if running is not None:
        return f"{server.url(settings.embedded_database)} ({where})"
    if saved is not None:
        shown = server.url(settings.embedded_database, port=saved)
        return f"{shown} ({where}, not running)"
    return f"{where}, database {settings.embedded_database} (not started yet)"
