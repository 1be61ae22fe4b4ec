"""notifications routes (being written)."""

from fastapi import APIRouter

router = APIRouter(prefix="/notifications", tags=["notifications"])
