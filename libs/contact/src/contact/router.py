"""contact routes (being written)."""

from fastapi import APIRouter

router = APIRouter(prefix="/contact", tags=["contact"])
