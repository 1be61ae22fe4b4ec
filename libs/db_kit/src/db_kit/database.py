"""The ``Database`` every db lib exports: lazy engines, units of work, translated errors."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from db_kit.config import DatabaseConfig
from db_kit.engine import Engines, build_engines
from db_kit.errors import ConstraintColumns, translate
from db_kit.settings import DatabaseSettings
from db_shared.errors import DatabaseError

T = TypeVar("T")


class SQLAlchemyDatabase:
    """Implements ``db_shared.Database`` for one configured PostgreSQL database.

    Engines are created on first use, once per instance; ``dispose()`` closes them and the
    next use creates them again.
    """

    def __init__(
        self,
        config: DatabaseConfig,
        *,
        settings: DatabaseSettings | None = None,
        url: URL | str | None = None,
    ) -> None:
        self.config = config
        self._settings = settings
        self._url = url
        self._engines: Engines | None = None
        self._lock = threading.Lock()
        self._models: dict[type, type] = {}
        self._columns: ConstraintColumns | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def settings(self) -> DatabaseSettings:
        return self._settings if self._settings is not None else self.config.settings()

    @property
    def engines(self) -> Engines:
        engines = self._engines
        if engines is None:
            with self._lock:
                if self._engines is None:
                    from sqlalchemy.engine import make_url

                    url = make_url(self._url) if isinstance(self._url, str) else self._url
                    self._engines = build_engines(self.settings, url)
                engines = self._engines
        return engines

    # errors --------------------------------------------------------------------------

    def translate(self, exc: BaseException) -> DatabaseError | None:
        """The ``db_shared`` error for a driver error raised against this database."""
        if self._columns is None:
            self._columns = ConstraintColumns(self.config.metadata)
        url = self._engines.url if self._engines is not None else None
        return translate(exc, columns=self._columns, url=url)

    # units of work -------------------------------------------------------------------

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        try:
            async with self.engines.async_sessions() as session:
                try:
                    yield session
                    await session.commit()
                except BaseException:
                    await session.rollback()
                    raise
        except Exception as exc:
            mapped = self.translate(exc)
            if mapped is None or mapped is exc:
                raise
            raise mapped from exc

    @contextmanager
    def sync_session(self) -> Iterator[Session]:
        try:
            with self.engines.sync_sessions() as session:
                try:
                    yield session
                    session.commit()
                except BaseException:
                    session.rollback()
                    raise
        except Exception as exc:
            mapped = self.translate(exc)
            if mapped is None or mapped is exc:
                raise
            raise mapped from exc

    # models --------------------------------------------------------------------------

    def model(self, table: type[T]) -> type[T]:
        found = self._models.get(table)
        if found is None:
            candidates = [
                m.class_ for m in self.config.base.registry.mappers if issubclass(m.class_, table)
            ]
            if len(candidates) != 1:
                raise LookupError(
                    f"{self.name} maps {len(candidates)} classes built from {table.__name__}; "
                    f"compose it exactly once in {self.config.models}."
                )
            found = candidates[0]
            self._models[table] = found
        return found

    # health and lifecycle ------------------------------------------------------------

    async def ping(self) -> None:
        try:
            async with self.engines.async_engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            mapped = self.translate(exc)
            if mapped is None:
                raise
            raise mapped from exc

    def ping_sync(self) -> None:
        try:
            with self.engines.sync_engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            mapped = self.translate(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def dispose(self) -> None:
        with self._lock:
            engines, self._engines = self._engines, None
        if engines is not None:
            await engines.async_engine.dispose()
            engines.sync_engine.dispose()

    def dispose_sync(self) -> None:
        """Dispose from synchronous code (scripts); async connections are dropped unclosed."""
        with self._lock:
            engines, self._engines = self._engines, None
        if engines is not None:
            engines.sync_engine.dispose()
            engines.async_engine.sync_engine.dispose(close=False)

    def __repr__(self) -> str:
        return f"SQLAlchemyDatabase({self.name})"
