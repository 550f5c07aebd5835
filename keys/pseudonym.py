"""Keyed pseudonyms: the only form in which a person's identifier is kept or logged."""

from __future__ import annotations

import base64
import hashlib
import hmac
import unicodedata

MAX_IDENTIFIER_CHARS = 128


class Pseudonymiser:
    """HMAC-SHA256 under the gateway's secret, over the region and the normalised identifier.

    The same person (same region, same identifier) always maps to the same pseudonym under one
    secret; without the secret a pseudonym reveals nothing and cannot be checked against a
    guessed identifier.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("a pseudonym secret has at least 32 bytes")
        self._secret = bytes(secret)

    def __call__(self, region: str, identifier: str) -> str:
        normalised = unicodedata.normalize("NFKC", identifier).strip().upper()
        if not normalised or len(normalised) > MAX_IDENTIFIER_CHARS:
            raise ValueError("a holder identifier has 1 to 128 characters")
        mac = hmac.new(self._secret, f"{region}\x00{normalised}".encode(), hashlib.sha256)
        return "h1-" + base64.b32encode(mac.digest()[:20]).decode("ascii").lower()

    def __repr__(self) -> str:  # never show the secret
        return "Pseudonymiser(<secret>)"
