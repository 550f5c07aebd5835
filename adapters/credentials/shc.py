"""SMART Health Cards, verified through the shared JWS codec.

Input: a compact JWS; a numeric QR text ``shc:/<digits>``; several chunks ``shc:/i/n/<digits>``
one per line, in any order; or a ``.smart-health-card`` file (``{"verifiableCredential": [...]}``).
Steps (a failure's message starts with its name):

``INPUT``     the input is one of those forms, within its size limit;
``NUMERIC``   digit pairs d (0..77) -> chr(d + 45); chunks complete, each once, same total;
``JWS``       header ``alg`` ES256, ``zip`` DEF and a ``kid``; no ``crit`` or key-bearing members;
``KEY``       the kid names a P-256 key of the issuer's JWKS whose kid is its JWK thumbprint
              (RFC 7638), with ``use`` sig and ``alg`` ES256 where it says;
``VERIFY``    the signature is a raw 64-byte r||s and verifies over the bytes received;
``PAYLOAD``   raw DEFLATE, inflated up to a size limit, of a JSON object with ``iss``, ``nbf``,
              ``vc`` and optionally ``exp``;
``VALIDITY``  ``nbf <= now`` and, when present, ``now <= exp``;
``REVOCATION`` ``vc.rid`` is not in a revocation list of the signing kid; ``rid.T`` revokes only
              cards whose ``nbf`` is before T.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.codecs.encoding import b64url_encode, dump_json, parse_json
from adapters.codecs.jws import JwsCodec
from adapters.credentials import step
from keys.crypto import Algorithm, PublicKey
from keys.errors import (
    CodeExpiredError,
    CodeNotYetValidError,
    CodeRevokedError,
    ForeignDataError,
    KeyUnknownError,
    MalformedError,
    OversizedError,
)
from keys.timeutil import ensure_utc

MAX_JWS_CHARS = 64 * 1024
MAX_PAYLOAD_BYTES = 1024 * 1024  # inflated JSON; FHIR bundles compress about 13:1
MAX_PAYLOAD_DEPTH = 32
MAX_INPUT_CHARS = 2 * MAX_JWS_CHARS + 4096
MAX_CHUNKS = 16
MAX_CARDS = 16
MAX_TRUST_BYTES = 1024 * 1024
MAX_RIDS = 100_000

CODEC = JwsCodec(
    "",
    frozenset({Algorithm.ES256}),
    deflate=True,
    require_kid=True,
    max_payload_bytes=MAX_PAYLOAD_BYTES,
    max_code_chars=MAX_JWS_CHARS,
    max_payload_depth=MAX_PAYLOAD_DEPTH,
)

_SINGLE = re.compile(r"shc:/([0-9]+)", re.IGNORECASE)
_CHUNK = re.compile(r"shc:/([0-9]{1,3})/([0-9]{1,3})/([0-9]+)", re.IGNORECASE)
_SEPARATOR = re.compile(r"\s+|(?=shc:/)", re.IGNORECASE)
_RID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint of an EC key, base64url (the SMART Health Cards kid)."""
    members = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    return b64url_encode(hashlib.sha256(dump_json(dict(sorted(members.items())))).digest())


@dataclass(frozen=True)
class IssuerKeys:
    """An issuer's JWKS: usable keys by kid, and why any other key was set aside."""

    keys: Mapping[str, PublicKey]
    set_aside: Mapping[str, str]

    @classmethod
    def from_jwks(cls, data: bytes) -> IssuerKeys:
        """Parse a JWKS file; raises ``ValueError`` when it is not one (a usage error)."""
        if len(data) > MAX_TRUST_BYTES:
            raise ValueError(f"the JWKS file exceeds {MAX_TRUST_BYTES} bytes")
        try:
            jwks = parse_json(data, limit=MAX_TRUST_BYTES)
        except MalformedError as exc:
            raise ValueError(f"not a JWKS: {exc}") from None
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise ValueError('not a JWKS: no "keys" list')
        keys: dict[str, PublicKey] = {}
        set_aside: dict[str, str] = {}
        for jwk in jwks["keys"]:
            if not isinstance(jwk, dict):
                raise ValueError("not a JWKS: a key is not a JSON object")
            if "d" in jwk:
                raise ValueError("the JWKS holds private key material")
            kid = jwk.get("kid")
            if not isinstance(kid, str) or not kid:
                continue
            why = _unusable(jwk)
            if why is None:
                try:
                    keys[kid] = PublicKey.from_jwk(
                        {name: jwk[name] for name in ("kty", "crv", "x", "y")}
                    )
                    continue
                except ForeignDataError as exc:
                    why = f"not a usable P-256 key ({exc})"
            set_aside[kid] = why
        if not keys and not set_aside:
            raise ValueError("the JWKS holds no key with a kid")
        return cls(keys, set_aside)

    def key_for(self, kid: str) -> PublicKey:
        """The issuer's key ``kid``; raises :class:`KeyUnknownError`, saying why when the key was
        set aside.
        """
        key = self.keys.get(kid)
        if key is not None:
            return key
        why = self.set_aside.get(kid)
        raise KeyUnknownError(
            f"the JWKS key {kid} is set aside: {why}" if why else f"the JWKS has no key {kid}",
            kid=kid,
        )


def _unusable(jwk: Mapping[str, Any]) -> str | None:
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        return "not an EC P-256 key"
    if jwk.get("use", "sig") != "sig":
        return "its use is not sig"
    if jwk.get("alg", "ES256") != "ES256":
        return "its alg is not ES256"
    if not all(isinstance(jwk.get(m), str) for m in ("x", "y")):
        return "its coordinates are missing"
    if thumbprint(jwk) != jwk["kid"]:
        return "its kid is not its JWK thumbprint"
    return None


@dataclass(frozen=True)
class RevocationList:
    """An issuer's revocation list for one key: rid -> the cut-off times (None = always)."""

    kid: str
    ctr: int | None
    rids: Mapping[str, tuple[int | None, ...]]

    @classmethod
    def from_json(cls, data: bytes) -> RevocationList:
        """Parse a CRL file; raises ``ValueError`` when it is not one (a usage error)."""
        if len(data) > MAX_TRUST_BYTES:
            raise ValueError(f"the CRL file exceeds {MAX_TRUST_BYTES} bytes")
        try:
            crl = parse_json(data, limit=MAX_TRUST_BYTES)
        except MalformedError as exc:
            raise ValueError(f"not a revocation list: {exc}") from None
        if not isinstance(crl, dict) or not isinstance(crl.get("kid"), str):
            raise ValueError('not a revocation list: no "kid"')
        if crl.get("method", "rid") != "rid":
            raise ValueError("the revocation list's method is not rid")
        entries = crl.get("rids")
        if not isinstance(entries, list) or len(entries) > MAX_RIDS:
            raise ValueError('not a revocation list: no "rids" list')
        ctr = crl.get("ctr")
        rids: dict[str, tuple[int | None, ...]] = {}
        for entry in entries:
            if not isinstance(entry, str):
                raise ValueError("a revocation list entry is not a string")
            rid, _, stamp = entry.partition(".")
            if not _RID.fullmatch(rid) or (stamp and not (stamp.isascii() and stamp.isdigit())):
                raise ValueError(f"revocation list entry {entry[:40]!r} is not rid[.timestamp]")
            rids[rid] = (*rids.get(rid, ()), int(stamp) if stamp else None)
        return cls(crl["kid"], ctr if isinstance(ctr, int) else None, rids)

    def revokes(self, rid: str, nbf: float) -> bool:
        """Whether the list revokes ``rid`` for a card issued at ``nbf`` (unix seconds)."""
        return any(cut is None or nbf < cut for cut in self.rids.get(rid, ()))


# --- input forms ------------------------------------------------------------------------------


def _numeric(digits: str) -> str:
    if len(digits) % 2:
        raise MalformedError("the numeric QR text has an odd number of digits")
    pairs = [int(digits[i : i + 2]) for i in range(0, len(digits), 2)]
    if any(value > 77 for value in pairs):
        raise MalformedError("a numeric QR digit pair exceeds 77")
    return "".join(chr(value + 45) for value in pairs)


def _assemble(chunks: Sequence[str]) -> str:
    parts: dict[int, str] = {}
    total: int | None = None
    for chunk in chunks:
        match = _CHUNK.fullmatch(chunk)
        if match is None:
            raise MalformedError("a line is not a numeric QR chunk shc:/i/n/<digits>")
        index, count = int(match.group(1)), int(match.group(2))
        if not 1 <= index <= count <= MAX_CHUNKS:
            raise MalformedError(f"chunk {index}/{count} is out of range (at most {MAX_CHUNKS})")
        if total is not None and count != total:
            raise MalformedError("the chunks disagree on their total")
        if index in parts:
            raise MalformedError(f"chunk {index} is given twice")
        total = count
        parts[index] = match.group(3)
    if total is None or len(parts) != total:
        raise MalformedError(f"{len(parts)} of {total} chunks given")
    return "".join(parts[i] for i in range(1, total + 1))


def cards(text: str) -> list[str]:
    """The compact JWS of every card in ``text`` (any accepted input form)."""
    with step("INPUT"):
        if len(text) > MAX_INPUT_CHARS:
            raise OversizedError(f"the input exceeds {MAX_INPUT_CHARS} characters")
        stripped = text.strip()
        if stripped.startswith("{"):
            document = parse_json(stripped.encode("utf-8"), limit=MAX_INPUT_CHARS)
            found = document.get("verifiableCredential") if isinstance(document, dict) else None
            if (
                not isinstance(found, list)
                or not 0 < len(found) <= MAX_CARDS
                or not all(isinstance(jws, str) for jws in found)
            ):
                raise MalformedError(
                    f'a health card file holds "verifiableCredential": 1 to {MAX_CARDS} strings'
                )
            return list(found)
        # one chunk per line; chunks run together (files concatenated) split at each "shc:/"
        lines = [part for part in _SEPARATOR.split(stripped) if part]
        if not lines:
            raise MalformedError("the input is empty")
        if not lines[0][:5].lower() == "shc:/":
            if len(lines) != 1:
                raise MalformedError("a compact JWS is one line")
            return lines
    with step("NUMERIC"):
        if len(lines) == 1 and (single := _SINGLE.fullmatch(lines[0])) is not None:
            return [_numeric(single.group(1))]
        return [_numeric(_assemble(lines))]


# --- verification -----------------------------------------------------------------------------


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedError(f"the card's {name} is missing or not a number")
    return float(value)


def verify_card(
    jws: str,
    keys: IssuerKeys,
    crls: Sequence[RevocationList],
    now: datetime,
    verified: dict[Any, Any] | None = None,
) -> Mapping[str, Any]:
    """Verify one compact JWS; return its payload. Raises ``ForeignDataError``.

    Once the payload is verified and decoded it is also put in ``verified``.
    """
    with step("JWS"):
        if len(jws) > MAX_JWS_CHARS:
            raise OversizedError(f"the JWS exceeds {MAX_JWS_CHARS} characters")
        envelope = CODEC.open(jws)
        kid = envelope.kid_hint or ""
    with step("KEY"):
        key = keys.key_for(kid)
    with step("VERIFY"):
        key.verify(envelope.signing_input, envelope.signature)
    # From here on the payload is signed by a trusted issuer key.
    with step("PAYLOAD"):
        claims = CODEC.claims(envelope.payload)
        if not isinstance(claims.get("iss"), str):
            raise MalformedError("the card has no iss")
        nbf = _number(claims, "nbf")
        exp = _number(claims, "exp") if "exp" in claims else None
        vc = claims.get("vc")
        if not isinstance(vc, dict):
            raise MalformedError("the card has no vc object")
        rid = vc.get("rid")
        if rid is not None and not isinstance(rid, str):
            raise MalformedError("the card's vc.rid is not a string")
    if verified is not None:
        verified.update(claims)
    with step("VALIDITY"):
        at = ensure_utc(now).timestamp()
        if at < nbf:
            raise CodeNotYetValidError(f"the card is valid from {nbf:.0f}, after {at:.0f}")
        if exp is not None and at > exp:
            raise CodeExpiredError(f"the card expired at {exp:.0f}, before {at:.0f}")
    with step("REVOCATION"):
        if rid is not None:
            for crl in crls:
                if crl.kid == kid and crl.revokes(rid, nbf):
                    raise CodeRevokedError(f"rid {rid} is revoked by the list for key {kid}")
    return claims


def verify(
    text: str,
    keys: IssuerKeys,
    crls: Sequence[RevocationList],
    now: datetime,
    verified: dict[Any, Any] | None = None,
) -> Mapping[str, Any]:
    """Verify every card in ``text``; the payload of a single card, else ``{"cards": [...]}``.

    Verified payloads are also put in ``verified`` (as the return value would hold them).
    """
    found = cards(text)
    payloads: list[Mapping[str, Any]] = []
    for index, jws in enumerate(found, 1):
        card: dict[Any, Any] = {}
        try:
            payloads.append(verify_card(jws, keys, crls, now, card))
        except ForeignDataError as exc:
            if len(found) > 1:
                exc.message = f"card {index} of {len(found)}: {exc.message}"
                exc.args = (exc.message,)
            raise
        finally:
            if verified is not None and card:
                if len(found) == 1:
                    verified.update(card)
                else:
                    verified.setdefault("cards", []).append(card)
    return payloads[0] if len(payloads) == 1 else {"cards": payloads}


__all__ = ["CODEC", "IssuerKeys", "RevocationList", "cards", "thumbprint", "verify", "verify_card"]
