"""The one form an email address is stored and looked up in (standard library only).

The seed helpers (installed with the tables, no web stack) and the request schemas both
use it, so an address typed in any compatibility form is one account.
"""

from __future__ import annotations

import unicodedata


def normalize_email(value: str) -> str:
    """The one form an email is stored and looked up in: NFKC, then casefolded.

    fullwidth ``ada@example.com`` (U+FF41...), ``ADA@example.com`` and ``ada@example.com`` are one
    address, and ``STRAßE@`` is ``strasse@``. NFKC again after casefolding (which can
    denormalise) and ``lower`` at the end (casefolding maps a few scripts, e.g. Cherokee, to
    upper case) make the result stable and satisfy the table's ``email = lower(email)``.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())
    return folded.lower()


__all__ = ["normalize_email"]
