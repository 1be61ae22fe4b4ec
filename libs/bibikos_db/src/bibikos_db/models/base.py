"""The declarative base of bibikos_db: its own ``MetaData`` with the project's naming convention."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import DeclarativeBase

from db_kit.models import new_metadata


class Base(DeclarativeBase):
    """Base of every bibikos_db model; shared tables join it through their feature mixins."""

    metadata = new_metadata()
    # RETURNING fetches server-side values (updated_at on UPDATE too) during the flush, so
    # reading them afterwards never lazy-loads, which an AsyncSession cannot do.
    __mapper_args__: Any = {"eager_defaults": True}
