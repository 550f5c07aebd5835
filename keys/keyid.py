"""The one key-id rule, applied wherever a key id enters the gateway.

A key id (``kid``) is **1 to 128 characters, each a printable ASCII character other than space**
(``!`` to ``~``, U+0021 to U+007E). The same rule holds for the key ids of partner codes (compact
envelope, JWS header, COSE label 4 as text), of code-signing keys in key sets, key revocations and
``trustgw keys add`` / ``revoke``, and of anchors in partner files (docs/partners.md §1.3,
docs/trust-registry.md §1).

Why this rule: it is the one the partner formats have always stated, so every code a partner
issues today keeps its key id; every key id in real use fits it (the gateway's and the
simulator's 16-hex-digit fingerprints, ``kat-<region>``, RFC 7638 JWK thumbprints in base64url,
EU DCC key ids in standard base64 with ``+ / =``, hex key identifiers up to 64 bytes); it refuses
nothing a key set or partner file accepted before (their rule was a subset); and without space,
control or non-ASCII characters a key id is one unambiguous token on a command line, in a log line
and in a table, with one byte per character in the compact and COSE envelopes.
"""

from __future__ import annotations

import re

from keys.errors import MalformedError

MAX_KID_CHARS = 128
KID_RULE = "1 to 128 printable ASCII characters (! to ~), no space"
_KID = re.compile(r"[!-~]{1,128}")

__all__ = ["KID_RULE", "MAX_KID_CHARS", "check_kid", "is_kid", "require_kid"]


def is_kid(value: object) -> bool:
    """Whether ``value`` is a key id under the rule."""
    return isinstance(value, str) and _KID.fullmatch(value) is not None


def _shown(value: object) -> str:
    if not isinstance(value, str):
        return f"(a {type(value).__name__}, not text)"
    if not value:
        return "'' (empty)"
    if len(value) <= 40:
        return repr(value)
    return f"{value[:40]!r}… ({len(value)} characters)"


def _problem(kid: object, what: str, echo: bool) -> str:
    shown = f" {_shown(kid)}" if echo else ""
    return f"{what}{shown} is not {KID_RULE}"


def check_kid(kid: object, what: str = "key id", *, echo: bool = True) -> str:
    """Return ``kid`` if it is a key id under the rule; raise :class:`MalformedError` otherwise.

    For key ids in data (codes, statements, files, command lines). ``what`` names the key id in
    the message; ``echo=False`` keeps the value itself out of it (key ids read from codes).
    """
    if not is_kid(kid):
        raise MalformedError(_problem(kid, what, echo))
    assert isinstance(kid, str)
    return kid


def require_kid(kid: object, what: str = "key id") -> str:
    """:func:`check_kid` for constructors: a bad key id is a bad argument (``ValueError``)."""
    if not is_kid(kid):
        raise ValueError(_problem(kid, what, True))
    assert isinstance(kid, str)
    return kid
