"""Keyed pseudonyms: the only form in which a person's identifier is kept or logged.

A holder is named in two steps:

1. ``holder_hash(region, id)`` = SHA-256 hex of ``"<region>|<normalised id>"``. Partners compute
   this themselves to name a holder in a revocation batch, so that no raw ID number crosses the
   wire. It is an *unkeyed* hash of a guessable identifier, so the gateway never stores it.
2. the pseudonym = HMAC-SHA256 under the gateway's secret over that hex text. Only this is kept.

Normalised = Unicode NFKC, surrounding white space stripped, upper case.

A partner's code id is kept the same way, because some partners use the holder's ID number as
their code id: ``code_hash(region, id)`` = SHA-256 hex of ``"<region>|<id>"`` is what a partner
lists in a revocation batch (docs/partners.md); the gateway keeps only its *code key*, an
HMAC-SHA256 under the same secret over ``"code|" + code_hash`` (a separate domain from the holder
pseudonyms), and computes it from the code in hand when it needs to match one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import unicodedata

MAX_IDENTIFIER_CHARS = 128
PSEUDONYM_PREFIX = "h1-"
CODE_KEY_PREFIX = "c1-"
HOLDER_REF_PREFIX = "r1-"
MAX_REMEMBERED_CODE_KEYS = 50_000
_HASH = re.compile(r"[0-9a-f]{64}")


# Lower-case RFC 4648 base32 of every 10-bit value: two letters per lookup.
_B32_PAIRS = tuple(
    a + b for a in "abcdefghijklmnopqrstuvwxyz234567" for b in "abcdefghijklmnopqrstuvwxyz234567"
)


def _b32_160(mac: bytes) -> str:
    """``base64.b32encode(mac[:20]).decode().lower()`` (the first 160 bits: 32 letters, no
    padding), without the standard library's per-chunk Python loop (three per decision)."""
    n = int.from_bytes(mac[:20], "big")
    p = _B32_PAIRS
    return (
        p[n >> 150] + p[(n >> 140) & 1023] + p[(n >> 130) & 1023] + p[(n >> 120) & 1023]
        + p[(n >> 110) & 1023] + p[(n >> 100) & 1023] + p[(n >> 90) & 1023]
        + p[(n >> 80) & 1023] + p[(n >> 70) & 1023] + p[(n >> 60) & 1023]
        + p[(n >> 50) & 1023] + p[(n >> 40) & 1023] + p[(n >> 30) & 1023]
        + p[(n >> 20) & 1023] + p[(n >> 10) & 1023] + p[n & 1023]
    )  # fmt: skip


def normalise_identifier(identifier: str) -> str:
    """NFKC, strip, upper; raises ``ValueError`` if empty or longer than 128 characters."""
    normalised = unicodedata.normalize("NFKC", identifier).strip().upper()
    if not normalised or len(normalised) > MAX_IDENTIFIER_CHARS:
        raise ValueError("a holder identifier has 1 to 128 characters")
    return normalised


def code_hash(region: str, code_id: str) -> str:
    """How a revocation names a code: ``sha256("<region>|<code id>")`` as lower-case hex.

    An unkeyed hash of what may be a personal identifier: sent by partners, never stored.
    """
    return hashlib.sha256(f"{region}|{code_id}".encode()).hexdigest()


def holder_hash(region: str, identifier: str) -> str:
    """``sha256("<region>|<normalised identifier>")`` as 64 lower-case hex digits.

    What a partner puts in a revocation batch to name a holder. Raises ``ValueError``.
    """
    return hashlib.sha256(f"{region}|{normalise_identifier(identifier)}".encode()).hexdigest()


class Pseudonymiser:
    """HMAC-SHA256 under the gateway's secret over a holder's :func:`holder_hash`.

    The same person (same region, same identifier) always maps to the same pseudonym under one
    secret; without the secret a pseudonym reveals nothing and cannot be checked against a
    guessed identifier.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("a pseudonym secret has at least 32 bytes")
        self._secret = bytes(secret)
        # (region, code id) -> code key, for codes seen again (a recognition computes the key
        # to convert and the recognition log again to store the entry). Memory only, bounded.
        self._code_keys: dict[tuple[str, str], str] = {}

    def __call__(self, region: str, identifier: str) -> str:
        """The pseudonym of a raw identifier; raises ``ValueError`` for an unusable one."""
        # The hash is made here, so it needs no check (from_holder_hash checks a partner's).
        mac = hmac.digest(self._secret, holder_hash(region, identifier).encode("ascii"), "sha256")
        return PSEUDONYM_PREFIX + _b32_160(mac)

    def from_holder_hash(self, hashed: str) -> str:
        """The pseudonym of a partner-supplied :func:`holder_hash` (64 lower-case hex digits).

        Raises ``ValueError`` if ``hashed`` is not such a hash.
        """
        if not isinstance(hashed, str) or _HASH.fullmatch(hashed) is None:
            raise ValueError("a holder hash is 64 lower-case hex digits")
        # hmac.digest: OpenSSL's one-shot HMAC, no HMAC object per call (the hot path).
        mac = hmac.digest(self._secret, hashed.encode("ascii"), "sha256")
        return PSEUDONYM_PREFIX + _b32_160(mac)

    def code_key(self, region: str, code_id: str) -> str:
        """The code key of a partner code id: the only form in which a code id is stored."""
        known = self._code_keys.get((region, code_id))
        if known is not None:
            return known
        key = self.from_code_hash(code_hash(region, code_id))
        if len(self._code_keys) >= MAX_REMEMBERED_CODE_KEYS:
            self._code_keys.clear()
        self._code_keys[(region, code_id)] = key
        return key

    def from_code_hash(self, hashed: str) -> str:
        """The code key of a partner-supplied :func:`code_hash` (64 lower-case hex digits).

        Raises ``ValueError`` if ``hashed`` is not such a hash.
        """
        if not isinstance(hashed, str) or _HASH.fullmatch(hashed) is None:
            raise ValueError("a code hash is 64 lower-case hex digits")
        mac = hmac.digest(self._secret, b"code|" + hashed.encode("ascii"), "sha256")
        return CODE_KEY_PREFIX + _b32_160(mac)

    def holder_ref(self, audience: str, pseudonym: str) -> str:
        """The holder reference a status document gives ``audience`` (the asking partner's
        region) for a holder known by ``pseudonym``: keyed again per audience, so two partners
        cannot join their answers on it, and nothing in it can be checked against a guessed
        identifier. Raises ``ValueError`` for an empty pseudonym."""
        if not pseudonym:
            raise ValueError("a holder reference is made from a pseudonym")
        message = f"holder-ref|{audience}|{pseudonym}".encode()
        mac = hmac.digest(self._secret, message, "sha256")
        return HOLDER_REF_PREFIX + base64.b32encode(mac[:20]).decode("ascii").lower()

    def __repr__(self) -> str:  # never show the secret
        return "Pseudonymiser(<secret>)"
