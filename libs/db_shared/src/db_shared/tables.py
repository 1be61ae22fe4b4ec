"""Base of the shared table mixins feature modules define."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any


class TableMixin:
    """Marks a shared table definition; each db lib composes it into its declarative base.

    For type checkers only, it declares the keyword constructor the declarative base adds,
    so feature code can write ``db.model(AuthUserTable)(email=...)``.
    """

    __slots__ = ()

    if TYPE_CHECKING:

        def __init__(self, **values: Any) -> None: ...
