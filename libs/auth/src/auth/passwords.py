"""Password hashing with pwdlib (Argon2id), off the event loop."""

from __future__ import annotations

import asyncio

from pwdlib import PasswordHash

_hasher = PasswordHash.recommended()
# Verified when the email is unknown, so a miss costs as much time as a wrong password.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password: str, hashed: str | None) -> bool:
    return await asyncio.to_thread(_hasher.verify, password, hashed or _DUMMY_HASH) and bool(hashed)
