"""A typed, hashable key under which an app binds a service for feature modules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from db_shared.errors import UnboundTokenError

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Token(Generic[T]):
    """Identity-compared key. Usable as an svcs service key or a dict key.

    ``eq=False`` keeps hashing by identity: two tokens with the same name are still two keys.
    """

    name: str
    kind: type[T]
    bind_hint: str = ""

    def unbound(self, where: str | None = None) -> UnboundTokenError:
        """The error to raise when a consumer finds nothing bound to this token."""
        place = f"{where} asked for it, but " if where else ""
        hint = f"{place}nothing bound it. {self.bind_hint}".strip()
        return UnboundTokenError(self.name, hint=hint)

    def __repr__(self) -> str:
        return f"Token({self.name})"
