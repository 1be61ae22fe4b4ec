"""FastAPI dependencies feature routers use: the bound ``Database`` and safe path ids."""

from __future__ import annotations

from typing import Annotated

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


DatabaseDep = Annotated[Database, Depends(get_database)]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="Positive 64-bit id")]

__all__ = ["DatabaseDep", "IdPath", "get_database"]
