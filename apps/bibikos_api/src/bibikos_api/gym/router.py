"""Gym routes (being written)."""

from fastapi import APIRouter

router = APIRouter(prefix="/gym", tags=["gym"])
