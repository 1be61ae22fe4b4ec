"""Why ``db new`` refuses a request: one error type whose message names the fix."""

from __future__ import annotations

from db_shared.errors import ConfigurationError

__all__ = ["ScaffoldError"]


class ScaffoldError(ConfigurationError):
    """The request cannot be scaffolded; the message names the problem and the fix."""
