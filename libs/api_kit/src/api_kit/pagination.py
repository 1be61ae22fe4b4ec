"""One page of a longer list, and the bounded ``limit``/``offset`` query parameters."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from api_kit.types import MAX_ID

T = TypeVar("T")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]


class Page(BaseModel, Generic[T]):
    """One page of a longer list; ``total`` counts every match, not just this page."""

    items: list[T]
    total: int
    limit: int
    offset: int
