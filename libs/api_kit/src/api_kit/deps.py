"""FastAPI dependencies feature routers use: the bound ``Database`` and safe path ids."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Path, Request

from api_kit._svcs import svcs
from api_kit.types import MAX_ID
from db_shared import DATABASE, Database


async def get_database(request: Request) -> Database:
    """The ``Database`` the app bound to the ``DATABASE`` token at start-up."""
    try:
        registry = svcs.fastapi.get_registry(request.app)
    except LookupError:  # an app whose lifespan is not svcs-aware
        raise DATABASE.unbound(request.app.title) from None
    if DATABASE not in registry:  # type: ignore[operator]  # svcs keys are hashables
        raise DATABASE.unbound(request.app.title)
    # Values need no per-request container: a registry lookup is enough.
    async with svcs.Container(registry) as container:
        database: Database = container.get(DATABASE)  # type: ignore[call-overload]
    return database


_USES_DATABASE = "__api_kit_uses_database__"
F = TypeVar("F", bound=Callable[..., object])


def uses_database(dependency: F) -> F:
    """Mark a dependency that calls ``get_database`` itself (``await get_database(request)``)
    rather than declaring ``DatabaseDep``: the OpenAPI contract then declares the database's
    errors (404, 503, 409 on writes) for every operation using it, as for ``DatabaseDep``.

    Each declared dependency level costs FastAPI a solve per request (~10-20 us); a hot
    dependency such as ``auth.current_user`` saves them this way.
    """
    setattr(dependency, _USES_DATABASE, True)
    return dependency


def is_database_dependency(call: object) -> bool:
    """``get_database`` itself, or a dependency marked with ``uses_database``."""
    return call is get_database or getattr(call, _USES_DATABASE, False) is True


DatabaseDep = Annotated[Database, Depends(get_database)]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="Positive 64-bit id")]

__all__ = ["DatabaseDep", "IdPath", "get_database", "is_database_dependency", "uses_database"]
