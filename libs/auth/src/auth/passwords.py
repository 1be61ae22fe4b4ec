"""Password hashing with pwdlib (Argon2id), off the event loop.

A password checked for an unknown account costs as much as one checked against a stored
hash: the password is hashed with today's parameters and the result dropped (an Argon2
hash and an Argon2 verification with the same parameters are the same work). No dummy
hash is computed at import (that cost every process 0.2-0.5 s at start-up,
bench/import_time.py), and the first miss is not slower than the next ones.
"""

from __future__ import annotations

import asyncio

from pwdlib import PasswordHash

_hasher = PasswordHash.recommended()


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(password: str, hashed: str | None) -> bool:
    if not hashed:
        _hasher.hash(password)  # as long as a verification, so a miss is not told apart
        return False
    return _hasher.verify(password, hashed)


def _verify_and_update(password: str, hashed: str | None) -> tuple[bool, str | None]:
    if not hashed:
        _hasher.hash(password)  # as long as a verification, so a miss is not told apart
        return False, None
    valid, updated = _hasher.verify_and_update(password, hashed)
    return valid, updated if valid else None


async def verify_password(password: str, hashed: str | None) -> bool:
    """Whether ``password`` matches ``hashed``; no hash (unknown user) never matches and
    takes as long as a wrong password."""
    return await asyncio.to_thread(_verify, password, hashed)


async def verify_and_update(password: str, hashed: str | None) -> tuple[bool, str | None]:
    """Whether ``password`` matches ``hashed``, and a new hash when ``hashed`` was made with
    other parameters (or another algorithm) than today's: the caller stores it, so hashes
    follow the current parameters as users log in. No hash (unknown user) never matches,
    and takes as long as a wrong password.
    """
    return await asyncio.to_thread(_verify_and_update, password, hashed)
