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


async def verify_and_update(password: str, hashed: str | None) -> tuple[bool, str | None]:
    """Whether ``password`` matches ``hashed``, and a new hash when ``hashed`` was made with
    other parameters (or another algorithm) than today's: the caller stores it, so hashes
    follow the current parameters as users log in. No hash (unknown user) never matches.
    """
    valid, updated = await asyncio.to_thread(
        _hasher.verify_and_update, password, hashed or _DUMMY_HASH
    )
    if not hashed:
        return False, None
    return valid, updated if valid else None
