"""The one region-code rule: a GB/T 2260 administrative division code is six ASCII digits.

``[0-9]{6}`` and nothing else: ``str.isdigit()`` also accepts other scripts' digits (Arabic-Indic
U+0660..U+0669, superscripts, fullwidth digits), which would name a region no partner has and no
key belongs to. The rule holds
for region rows, partner key files, statements, request hints, partner certificates and the
command line (docs/trust-registry.md §1).
"""

from __future__ import annotations

import re

from keys.errors import MalformedError

REGION_CODE_RULE = "a 6-digit division code (ASCII digits 0-9)"
_REGION_CODE = re.compile(r"[0-9]{6}")

__all__ = ["REGION_CODE_RULE", "check_region_code", "is_region_code"]


def is_region_code(value: object) -> bool:
    """Whether ``value`` is a region code: a ``str`` of exactly six ASCII digits."""
    return isinstance(value, str) and _REGION_CODE.fullmatch(value) is not None


def check_region_code(value: object, what: str = "region code") -> str:
    """Return ``value`` if it is a region code; raise :class:`MalformedError` naming ``what``.

    The value is echoed (at most 16 characters): a region code is never personal data.
    """
    if not is_region_code(value):
        shown = repr(value[:16]) if isinstance(value, str) else f"(a {type(value).__name__})"
        raise MalformedError(f"{what} {shown} is not {REGION_CODE_RULE}")
    assert isinstance(value, str)
    return value
