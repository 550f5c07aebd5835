"""What the gateway signs: decision attestations, converted home-province codes, receipts.

Every format lives here, signer and verifier side by side, so that they cannot drift apart. The
verifier side needs only the gateway's public keys (a trust file, see :class:`GatewayTrust`) and
no network: a checkpoint can keep a decision and check it later, offline.

Attestation and receipt: ``payload`` is canonical JSON (UTF-8, sorted keys, no spaces); the
signature is Ed25519 over exactly those bytes. Verifiers check the bytes they received, then
parse them.

Home-province code: ``SD1:`` + base64url(payload) + ``.`` + base64url(signature), the payload
being canonical JSON that names its key id; the signature covers the base64url payload text as
it stands in the code (the bytes before the ``.``), so nothing is re-serialised to verify.

One validity rule for all three (docs/verifying.md, "When a signed output is valid"): ``iat``
is when the gateway signed, ``exp`` the last second it holds; the signing key must have been
valid at ``iat`` (``not_before <= iat < not_after``), ``exp`` is never later than the key's
``not_after``, and the output is valid at *t* exactly when ``iat <= t <= exp``. The signing
side builds ``iat``/``exp`` in one place (:func:`validity`), so it cannot state a window the
verifying side refuses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gateway.claims import (
    ATTESTATION_TYPE,
    HOME_CODE_TYPE,
    RECEIPT_TYPE,
    AttestationClaims,
    HomeCodeClaims,
    ReceiptClaims,
)
from keys.crypto import (
    Algorithm,
    PrivateKey,
    PublicKey,
    b64url_decode,
    b64url_encode,
    load_public_key,
)
from keys.errors import (
    CodeExpiredError,
    CodeNotYetValidError,
    GatewayError,
    KeyNotValidError,
    KeyRevokedError,
    KeyUnknownError,
    MalformedError,
    OversizedError,
)
from keys.jsonutil import canonical_json, loads_strict
from keys.keylabels import labelled
from keys.model import HOME_REGION
from keys.records import SubmissionResult
from keys.timeutil import ensure_utc, from_unix, to_unix

if TYPE_CHECKING:
    from keys.keystore import GatewayKeyInfo
    from keys.trustlist import TrustList

HOME_CODE_PREFIX = "SD1:"
MAX_TOKEN_BYTES = 4096
MAX_TRUST_FILE_BYTES = 256 * 1024
MAX_JSON_DEPTH = 8  # payloads and trust files are two or three levels deep
REVOKED = "revoked"  # the one key status that matters to a verifier
# The labels of keys.keylabels.KeyLabel: pending (signs later), active (signs now), retired.
KEY_STATUSES = frozenset({"pending", "active", "retired", REVOKED})


def _parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    obj = loads_strict(data, max_bytes=MAX_TOKEN_BYTES, max_depth=MAX_JSON_DEPTH, what=what)
    if not isinstance(obj, dict):
        raise MalformedError(f"the {what} is not a JSON object")
    return obj


# --- the trust file: the gateway's public keys -----------------------------------------------


@dataclass(frozen=True)
class TrustedKey:
    """One of the gateway's public keys, as a verifier holds it.

    The key signs in ``[not_before, not_after)``; ``status`` is what it did when the file was
    written: ``pending`` (signs from ``not_before`` on), ``active`` (signed then), ``retired`` (a
    successor signs; what it signed stays valid) — all three verify alike within the window — or
    ``revoked`` (withdrawn: what it signed at or after ``revoked_at``, the compromise time, is
    refused; without a ``revoked_at``, everything it signed is).
    """

    kid: str
    role: str  # "attest" | "issue" | "trustlist"
    public_key: PublicKey
    not_before: datetime
    not_after: datetime
    status: str = "active"
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.status not in KEY_STATUSES:
            raise ValueError(f"unknown key status {self.status[:16]!r}")

    def to_json(self) -> dict[str, Any]:
        """The key's entry in a trust file (``trustgw keys export``)."""
        return {
            "kid": self.kid,
            "role": self.role,
            "alg": str(self.public_key.alg),
            "public_key": b64url_encode(self.public_key.spki),
            "not_before": to_unix(self.not_before),
            "not_after": to_unix(self.not_after),
            "status": self.status,
            "revoked_at": None if self.revoked_at is None else to_unix(self.revoked_at),
        }

    def check_signed(self, iat: datetime, exp: datetime) -> None:
        """Refuse an output this key signed at ``iat`` and that states validity until ``exp``.

        Raises :class:`KeyRevokedError` if the key is revoked, :class:`KeyNotValidError` unless
        ``not_before <= iat < not_after`` and ``exp <= not_after``.
        """
        if self.status == REVOKED and (self.revoked_at is None or iat >= self.revoked_at):
            since = "" if self.revoked_at is None else f" from {self.revoked_at.isoformat()}"
            raise KeyRevokedError(
                f"gateway key {self.kid} is withdrawn{since}: what it signed then or later is "
                "refused",
                kid=self.kid,
            )
        if not self.not_before <= iat < self.not_after:
            raise KeyNotValidError(
                f"gateway key {self.kid} was not valid at signing time {iat.isoformat()}",
                kid=self.kid,
            )
        if exp > self.not_after:
            raise KeyNotValidError(
                f"the validity stated ({exp.isoformat()}) outlasts gateway key {self.kid}",
                kid=self.kid,
            )


@dataclass(frozen=True)
class GatewayTrust:
    """The gateway's public keys, as a verifier holds them."""

    region: str
    keys: tuple[TrustedKey, ...]

    def find(self, kid: str, role: str) -> TrustedKey:
        """The key ``kid`` of ``role``; raises :class:`KeyUnknownError`."""
        for key in self.keys:
            if key.kid == kid and key.role == role:
                return key
        raise KeyUnknownError(f"no trusted gateway {role} key {kid[:40]!r}", kid=kid[:40])

    def key(self, kid: str, role: str, signed_at: datetime) -> TrustedKey:
        """The key ``kid`` of ``role``, which must have been valid (and not revoked) at
        ``signed_at``. Raises :class:`KeyUnknownError`, :class:`KeyNotValidError`,
        :class:`KeyRevokedError`."""
        key = self.find(kid, role)
        key.check_signed(signed_at, signed_at)
        return key

    def to_json(self) -> dict[str, Any]:
        """The trust file's members: the region and every key."""
        return {"region": self.region, "keys": [k.to_json() for k in self.keys]}

    @classmethod
    def from_json(cls, data: bytes | str | Mapping[str, Any]) -> GatewayTrust:
        """Parse a trust file (``trustgw keys export``); raises :class:`MalformedError`.

        ``status`` is optional (files written before it existed): absent means ``active``.
        """
        if isinstance(data, (bytes, str)):
            obj = loads_strict(
                data, max_bytes=MAX_TRUST_FILE_BYTES, max_depth=MAX_JSON_DEPTH, what="trust file"
            )
        else:
            obj = data
        try:
            keys = tuple(
                TrustedKey(
                    kid=str(k["kid"]),
                    role=str(k["role"]),
                    public_key=PublicKey.from_spki(
                        b64url_decode(str(k["public_key"])), Algorithm(str(k["alg"]))
                    ),
                    not_before=from_unix(int(k["not_before"])),
                    not_after=from_unix(int(k["not_after"])),
                    status=str(k.get("status", "active")),
                    revoked_at=_optional_time(k.get("revoked_at")),
                )
                for k in obj["keys"]
            )
            return cls(region=str(obj.get("region", HOME_REGION)), keys=keys)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedError(f"the trust file is not valid: {exc}") from None

    @classmethod
    def from_key_infos(cls, infos: Iterable[GatewayKeyInfo], *, now: datetime) -> GatewayTrust:
        """The trust a verifier gets from the gateway's published keys (``keys export``), each
        with its status at ``now`` (:mod:`keys.keylabels`)."""
        return cls(
            HOME_REGION,
            tuple(
                TrustedKey(
                    i.kid,
                    i.role.value,
                    i.public_key,
                    i.not_before,
                    i.not_after,
                    label.value,
                    i.revoked_at,
                )
                for i, label in labelled(infos, now)
            ),
        )

    @classmethod
    def from_trustlist(cls, trust_list: TrustList) -> GatewayTrust:
        """The gateway's keys as a verified trust list publishes them (owner ``370000``).

        Raises :class:`MalformedError` for a key entry that does not load.
        """
        keys = []
        try:
            for entry in trust_list.keys(HOME_REGION):
                keys.append(
                    TrustedKey(
                        str(entry["kid"]),
                        str(entry["role"]),
                        load_public_key(entry["public_key"]),
                        from_unix(entry["not_before"]),
                        from_unix(entry["not_after"]),
                        str(entry["status"]),
                        _optional_time(entry.get("revoked_at")),
                    )
                )
        except GatewayError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedError(f"the trust list's gateway keys are not valid: {exc}") from None
        return cls(HOME_REGION, tuple(keys))


def _optional_time(value: Any) -> datetime | None:
    """A compromise time as a trust file or list states it: unix seconds, or absent/null."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("revoked_at is whole unix seconds")
    return from_unix(value)


# --- the validity every signed output states ---------------------------------------------------


def validity(now: datetime, key: GatewayKeyInfo, *limits: datetime) -> tuple[int, int]:
    """``(iat, exp)`` in unix seconds for an output ``key`` signs at ``now``.

    ``iat`` is ``now`` (whole seconds, rounded down); ``exp`` the earliest of ``limits`` and
    the key's ``not_after``, rounded down. Raises ``ValueError`` (a programming error: the
    key directory hands out only keys valid now) if ``key`` does not sign at ``now``, or the
    window would be empty.
    """
    now = ensure_utc(now)
    if not key.not_before <= now < key.not_after:
        raise ValueError(f"gateway key {key.kid} does not sign at {now.isoformat()}")
    end = key.not_after
    for limit in limits:
        limit = ensure_utc(limit)
        if limit < end:
            end = limit
    iat, exp = int(now.timestamp()), int(end.timestamp())
    if exp < iat:
        raise ValueError("the validity would end before the output is signed")
    return iat, exp


def _times(claims: Mapping[str, Any], what: str) -> tuple[datetime, datetime]:
    iat, exp = claims.get("iat"), claims.get("exp")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (iat, exp)):
        raise MalformedError(f"the {what} lacks whole-second iat/exp times")
    try:
        start, end = from_unix(iat), from_unix(exp)  # type: ignore[arg-type]
    except ValueError:
        raise MalformedError(f"the {what}'s iat/exp are out of range") from None
    if end < start:
        raise MalformedError(f"the {what} expires before it is issued")
    return start, end


def _check_valid(claims: Mapping[str, Any], key: TrustedKey, now: datetime, what: str) -> None:
    """The one validity rule: key valid at ``iat``, ``exp`` within it, ``iat <= now <= exp``."""
    iat, exp = _times(claims, what)
    key.check_signed(iat, exp)
    if now < iat:
        raise CodeNotYetValidError(f"the {what} is not valid before {iat.isoformat()}")
    if now > exp:
        raise CodeExpiredError(f"the {what} expired at {exp.isoformat()}")


# --- attestations and receipts -----------------------------------------------------------------


@dataclass(frozen=True)
class Attestation:
    """A payload signed by the gateway's ``attest`` key: a decision, or a receipt."""

    payload: bytes
    kid: str
    alg: str
    signature: bytes

    def to_json(self) -> dict[str, str]:
        """The attestation as ``Attestation.to_json`` JSON: byte fields in base64url without
        padding.
        """
        return {
            "payload": b64url_encode(self.payload),
            "key_id": self.kid,
            "alg": self.alg,
            "signature": b64url_encode(self.signature),
        }

    @classmethod
    def from_json(cls, data: bytes | str) -> Attestation:
        """Read :meth:`to_json` output (nothing is verified here: :func:`verify_attestation`).

        Raises :class:`MalformedError` (not JSON, a member missing, bad base64url),
        :class:`OversizedError`.
        """
        obj = _parse_json_object(data.encode() if isinstance(data, str) else data, "attestation")
        try:
            return cls(
                payload=b64url_decode(str(obj["payload"])),
                kid=str(obj["key_id"]),
                alg=str(obj["alg"]),
                signature=b64url_decode(str(obj["signature"])),
            )
        except KeyError as exc:
            raise MalformedError(f"the attestation lacks {exc.args[0]!r}") from None


def sign_attestation(claims: AttestationClaims, kid: str, key: PrivateKey) -> Attestation:
    """Sign a decision as given, its window included (:func:`attest` states the window by the
    validity rule). Raises ``ValueError`` for claims without a window."""
    payload = canonical_json(claims.to_json())
    return Attestation(payload, kid, str(key.alg), key.sign(payload))


def attest(
    info: GatewayKeyInfo,
    key: PrivateKey,
    now: datetime,
    claims: AttestationClaims,
    *,
    until: datetime,
) -> tuple[Attestation, datetime]:
    """Sign a decision taken at ``now``; returns the attestation and its ``exp``.

    ``iat`` = ``now``, ``exp`` = the earlier of ``until`` and the key's ``not_after``. Raises
    ``ValueError`` as :func:`validity`.
    """
    iat, exp = validity(now, info, until)
    return sign_attestation(claims.with_validity(iat, exp), info.kid, key), from_unix(exp)


def _verify_payload(
    att: Attestation, trust: GatewayTrust, typ: str, what: str
) -> tuple[TrustedKey, dict[str, Any]]:
    # The signature first, over the exact bytes; only then are the payload's fields trusted.
    key = trust.find(att.kid, "attest")
    if att.alg != str(key.public_key.alg):
        raise MalformedError(f"{what} algorithm {att.alg[:16]!r} does not match key {att.kid}")
    key.public_key.verify(att.payload, att.signature)
    claims = _parse_json_object(att.payload, f"{what} payload")
    if claims.get("typ") != typ:
        raise MalformedError(f"the payload is not a trustgw {what}")
    return key, claims


def verify_attestation(att: Attestation, trust: GatewayTrust, now: datetime) -> dict[str, Any]:
    """Verify an attestation offline at ``now`` and return its claims.

    Raises :class:`KeyUnknownError`, :class:`SignatureInvalidError`, :class:`KeyNotValidError`,
    :class:`KeyRevokedError`, :class:`CodeNotYetValidError`, :class:`CodeExpiredError` or
    :class:`MalformedError`.
    """
    key, claims = _verify_payload(att, trust, ATTESTATION_TYPE, "attestation")
    AttestationClaims.from_json(claims)
    _check_valid(claims, key, ensure_utc(now), "attestation")
    return claims


def sign_receipt(
    info: GatewayKeyInfo, key: PrivateKey, now: datetime, result: SubmissionResult
) -> Attestation:
    """Sign the receipt of a partner submission at ``now`` with an ``attest`` key.

    ``iat`` = ``now``; ``exp`` = the key's ``not_after``: the receipt is proof for as long as
    its key is published. Raises ``ValueError`` as :func:`validity`.
    """
    iat, exp = validity(now, info)
    payload = canonical_json(ReceiptClaims.of(result).with_validity(iat, exp).to_json())
    return Attestation(payload, info.kid, str(key.alg), key.sign(payload))


def verify_receipt(att: Attestation, trust: GatewayTrust, now: datetime) -> dict[str, Any]:
    """Verify a submission receipt offline at ``now`` and return its claims.

    Raises as :func:`verify_attestation`.
    """
    key, claims = _verify_payload(att, trust, RECEIPT_TYPE, "receipt")
    ReceiptClaims.from_json(claims)
    _check_valid(claims, key, ensure_utc(now), "receipt")
    return claims


# --- converted home-province codes -------------------------------------------------------------


def home_code_id(region: str, source: str) -> str:
    """The converted code's id: the same source always yields the same id.

    ``source`` is a partner code's *code key* (never its raw id, which may be a personal
    identifier: :meth:`keys.pseudonym.Pseudonymiser.code_key`) or a stock certificate id.
    """
    digest = hashlib.sha256(f"{HOME_REGION}|{region}|{source}".encode()).hexdigest()
    return "SD" + digest[:30]


def sign_home_code(claims: HomeCodeClaims, key: PrivateKey) -> str:
    """Sign a home-province code as given: its key id and window included
    (:func:`issue_home_code` states them by the validity rule). Raises ``ValueError`` for
    claims without them."""
    payload = canonical_json(claims.to_json())
    body = b64url_encode(payload)
    signature = key.sign(body.encode("ascii"))
    return f"{HOME_CODE_PREFIX}{body}.{b64url_encode(signature)}"


def issue_home_code(
    info: GatewayKeyInfo,
    key: PrivateKey,
    now: datetime,
    claims: HomeCodeClaims,
    *,
    until: datetime,
) -> tuple[str, datetime]:
    """Issue a home-province code at ``now``; returns the code and its ``exp``.

    ``iat`` = ``now`` (the gateway's signing time, not the source code's: that is ``src_iat``
    in ``claims``); ``exp`` = the earlier of ``until`` and the key's ``not_after``. Raises
    ``ValueError`` as :func:`validity`.
    """
    iat, exp = validity(now, info, until)
    return sign_home_code(claims.signed_by(info.kid, iat, exp), key), from_unix(exp)


def home_code_kid(code: str) -> str:
    """The key id a home-province code names (unverified: for display and lookup only)."""
    body = code[len(HOME_CODE_PREFIX) :].partition(".")[0]
    return str(_parse_json_object(b64url_decode(body), "home code payload").get("kid", ""))


def verify_home_code(code: str, trust: GatewayTrust, now: datetime) -> dict[str, Any]:
    """Verify a converted home-province code offline at ``now`` and return its claims.

    Raises :class:`MalformedError`, :class:`OversizedError`, :class:`KeyUnknownError`,
    :class:`SignatureInvalidError`, :class:`KeyNotValidError`, :class:`KeyRevokedError`,
    :class:`CodeNotYetValidError` or :class:`CodeExpiredError`.
    """
    now = ensure_utc(now)
    code = code.strip()
    if len(code) > MAX_TOKEN_BYTES:
        raise OversizedError("the code is too long")
    if not code.startswith(HOME_CODE_PREFIX):
        raise MalformedError(f"a home-province code starts with {HOME_CODE_PREFIX}")
    body, sep, sig_text = code[len(HOME_CODE_PREFIX) :].partition(".")
    if not sep or "." in sig_text:
        raise MalformedError("a home-province code has two dot-separated parts")
    payload = b64url_decode(body)
    signature = b64url_decode(sig_text)
    # The key id sits inside the payload; it is only a hint until the signature verifies.
    key = trust.find(str(_parse_json_object(payload, "home code payload").get("kid")), "issue")
    key.public_key.verify(body.encode("ascii"), signature)
    claims = _parse_json_object(payload, "home code payload")
    if claims.get("typ") != HOME_CODE_TYPE:
        raise MalformedError("the payload is not a trustgw home-province code")
    HomeCodeClaims.from_json(claims)
    _check_valid(claims, key, now, "code")
    return claims
