"""The signed trust list: every region's code-signing keys and the gateway's own public keys.

One snapshot, built from one consistent registry state (no mix-and-match across regions), with
a version that increases whenever the content changes (persisted in the store) and an expiry
(freeze protection). Served in full or as a delta since a version (keys added or changed, keys
removed, all region records). Signed by the gateway's ``trustlist`` role.

Client side: :class:`TrustListVerifier` refuses an older version (``TRUSTLIST_ROLLBACK``), an
expired list (``TRUSTLIST_EXPIRED``), a bad signature (``SIGNATURE_INVALID``), and a list or
delta that contradicts the one it holds (``TRUSTLIST_CONFLICT``). This module imports no store:
the gateway's publisher (content, versions) is :mod:`keys.trustpublisher`.

Validity (docs/trust-registry.md §9): a list signed at ``issued_at`` is valid at *t* exactly
when ``issued_at <= t < expires``. ``expires`` is ``issued_at`` + the lifetime (24 h), cut to
the latest ``not_after`` of the trustlist keys valid at ``issued_at``; the list is signed by
every trustlist key valid at ``issued_at`` whose ``not_after`` is not before ``expires``, so
each signature is by a key valid over the list's whole validity (:func:`signing_plan`).

Trustlist key rotation rule (verifier side): a list is accepted when at least one of its
signatures verifies with a key the verifier already trusts and, where the verifier knows that
key's validity, ``not_before <= issued_at`` and ``expires <= not_after``. It trusts the pinned
keys it started with, and after each accepted list exactly the ``trustlist`` keys that list
publishes. The gateway announces a new trustlist key in the list before signing with it, and
signs with every trustlist key valid at the time, so a verifier follows a rotation whether it
saw the announcement (the new key was in the previous list) or not (the old key signs as well).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from keys.crypto import PrivateKey, PublicKey, load_public_key
from keys.errors import (
    ConfigurationError,
    MalformedError,
    SignatureInvalidError,
    TrustListConflictError,
    TrustListExpiredError,
    TrustListNotYetValidError,
    TrustListRollbackError,
)
from keys.jsonutil import canonical_json, loads_strict
from keys.keystore import GatewayKeyInfo, KeyRole
from keys.model import HOME_REGION, KeyStatus
from keys.signed import Envelope
from keys.timeutil import ensure_utc, from_unix, to_unix
from keys.trustclaims import (
    TrustListClaims,
    TrustListDeltaClaims,
    trustlist_claims_from_json,
)

DEFAULT_TTL = timedelta(hours=24)
MAX_TRUSTLIST_BYTES = 1536 * 1024
CODE_ROLE = "code"  # the role of a partner region's code-signing key in the list


# --- content -------------------------------------------------------------------------------------


def content_digest(content: Mapping[str, Any]) -> str:
    """SHA-256 hex over the canonical JSON of a content object."""
    return hashlib.sha256(canonical_json(content)).hexdigest()


def _key_id(entry: Mapping[str, Any]) -> tuple[str, str]:
    return (str(entry["owner"]), str(entry["kid"]))


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
    """(keys added or changed, keys removed as {owner, kid}) from ``old`` to ``new``."""
    before = {_key_id(k): k for k in old["keys"]}
    after = {_key_id(k): k for k in new["keys"]}
    upserted = [k for ident, k in sorted(after.items()) if before.get(ident) != k]
    removed = [{"owner": o, "kid": kid} for (o, kid) in sorted(set(before) - set(after))]
    return upserted, removed


def apply_delta(
    content: Mapping[str, Any],
    regions: Sequence[Any],
    upserted: Sequence[Any],
    removed: Sequence[Any],
) -> dict[str, Any]:
    """The content a delta leads to from ``content``."""
    keys = {_key_id(k): k for k in content["keys"]}
    for item in removed:
        keys.pop(_key_id(item), None)
    for item in upserted:
        keys[_key_id(item)] = item
    return {"regions": list(regions), "keys": [keys[i] for i in sorted(keys)]}


# --- signing (gateway side) -------------------------------------------------------------------


class TrustListKeys(Protocol):
    """What the publisher needs from the gateway's key directory."""

    def public_keys(self) -> list[GatewayKeyInfo]:
        """Every published gateway key (the list's own ``370000`` entries)."""
        ...

    def signers(self, role: KeyRole, now: datetime) -> list[tuple[GatewayKeyInfo, PrivateKey]]:
        """Every key of ``role`` valid at ``now`` (a list is signed by each that outlasts it)."""
        ...


@dataclass(frozen=True)
class PublishedTrustList:
    """A signed full list or delta, as served: ``envelope`` is what goes on the wire."""

    version: int
    since: int | None  # None: a full list
    issued_at: datetime
    expires: datetime
    envelope: bytes


def sign_trustlist(
    claims: TrustListClaims | TrustListDeltaClaims,
    keys: TrustListKeys,
    now: datetime,
    ttl: timedelta,
) -> PublishedTrustList:
    """Sign a list or delta at ``now`` (whole seconds) by :func:`signing_plan`, which states
    its ``issued_at`` and ``expires``.

    Raises :class:`ConfigurationError` when no trustlist key is valid at ``now``.
    """
    issued = ensure_utc(now).replace(microsecond=0)
    signers, expires = signing_plan(keys.signers(KeyRole.TRUSTLIST, issued), issued, ttl)
    signed = claims.with_validity(to_unix(issued), to_unix(expires)).to_json()
    envelope = Envelope.sign(canonical_json(signed), [(i.kid, k) for i, k in signers])
    since = claims.since if isinstance(claims, TrustListDeltaClaims) else None
    return PublishedTrustList(claims.version, since, issued, expires, envelope.to_bytes())


def signing_plan(
    valid: Sequence[tuple[GatewayKeyInfo, PrivateKey]], issued: datetime, ttl: timedelta
) -> tuple[list[tuple[GatewayKeyInfo, PrivateKey]], datetime]:
    """Who signs a list issued at ``issued`` (whole seconds), and until when it is valid.

    ``valid`` are the trustlist keys valid at ``issued``. ``expires`` is ``issued + ttl``, cut
    to the latest ``not_after`` among them; the signers are those whose ``not_after`` is not
    before ``expires``. Raises :class:`ConfigurationError` when there is no valid key.
    """
    if not valid:
        raise ConfigurationError(
            "the gateway has no valid trustlist key: trustgw keys rotate --role trustlist"
        )
    expires = min(issued + ttl, max(info.not_after for info, _ in valid))
    return [(i, k) for i, k in valid if i.not_after >= expires], expires


# --- verifying (client side) -----------------------------------------------------------------


@dataclass(frozen=True)
class PinnedKey:
    """A trustlist key a verifier trusts (from the gateway's key file, or a trust list).

    ``not_before``/``not_after``, when known, bound the lists the key may sign: one issued at or
    after ``not_before`` and expiring no later than ``not_after``. ``None``: no bound known.
    """

    kid: str
    public_key: PublicKey
    not_before: datetime | None = None
    not_after: datetime | None = None

    @classmethod
    def of(cls, infos: Iterable[GatewayKeyInfo]) -> list[PinnedKey]:
        """The trustlist-role keys among the gateway's published keys (not revoked)."""
        return [
            cls(i.kid, i.public_key, i.not_before, i.not_after)
            for i in infos
            if i.role is KeyRole.TRUSTLIST and i.status is not KeyStatus.REVOKED
        ]

    def may_sign(self, issued_at: datetime, expires: datetime) -> bool:
        """True if this key may sign a list valid from ``issued_at`` until ``expires``."""
        if self.not_before is not None and issued_at < self.not_before:
            return False
        return self.not_after is None or expires <= self.not_after


@dataclass(frozen=True)
class TrustList:
    """A verified trust list."""

    version: int
    issued_at: datetime
    expires: datetime
    digest: str
    content: Mapping[str, Any]

    def keys(self, owner: str | None = None, role: str | None = None) -> list[Mapping[str, Any]]:
        """Key entries, optionally of one owner (region code, or 370000 for the gateway) and
        role (``code`` for partner keys; ``attest``, ``issue``, ``trustlist`` for the gateway's)."""
        return [
            k
            for k in self.content["keys"]
            if (owner is None or k["owner"] == owner) and (role is None or k["role"] == role)
        ]

    def public_key(self, entry: Mapping[str, Any]) -> PublicKey:
        """The public key of a key entry, through the key funnel."""
        return load_public_key(entry["public_key"])


class TrustListVerifier:
    """Verifies trust lists and deltas offline, remembering the last one accepted.

    ``last_seen_version`` (persisted by the caller) guards against rollback across restarts; a
    delta needs the full list it applies to (``current``), else fetch the full list.
    """

    def __init__(
        self,
        pinned: Iterable[PinnedKey],
        last_seen_version: int = 0,
        current: TrustList | None = None,
    ) -> None:
        self._trusted = {p.kid: p for p in pinned}
        if not self._trusted:
            raise ValueError("a trust list verifier needs at least one pinned trustlist key")
        self._version = max(last_seen_version, current.version if current else 0)
        self._current = current

    @property
    def version(self) -> int:
        """The newest version accepted (or the last seen one given at construction)."""
        return self._version

    @property
    def current(self) -> TrustList | None:
        """The trust list accepted last, or None before the first :meth:`verify`."""
        return self._current

    @property
    def trusted_kids(self) -> frozenset[str]:
        """The ids of the trustlist keys trusted now (pinned, then as accepted lists publish
        them)."""
        return frozenset(self._trusted)

    def verify(self, data: bytes, now: datetime) -> TrustList:
        """Verify a full list or a delta and make it current.

        Valid at ``now`` means ``issued_at <= now < expires``. Raises
        :class:`keys.errors.SignatureInvalidError` (no signature by a trusted trustlist key that
        may sign this validity), :class:`keys.errors.MalformedError`,
        :class:`TrustListNotYetValidError`, :class:`TrustListExpiredError`,
        :class:`TrustListRollbackError`, :class:`TrustListConflictError`.
        """
        now = ensure_utc(now)
        envelope = Envelope.from_bytes(data)
        self._check_signature(envelope)
        claims = trustlist_claims_from_json(_parse(envelope.signed))
        version = claims.version
        issued_at = from_unix(claims.issued_at)
        expires = from_unix(claims.expires)
        # Only signatures by keys valid over the list's whole validity count.
        self._check_signature(envelope, issued_at, expires)
        if now < issued_at:
            raise TrustListNotYetValidError(
                f"trust list version {version} is not valid before {issued_at}"
            )
        if expires <= now:
            raise TrustListExpiredError(f"trust list version {version} expired at {expires}")
        if isinstance(claims, TrustListClaims):
            content = dict(claims.content)
        else:
            content = self._apply(claims)
        if version < self._version:
            raise TrustListRollbackError(
                f"trust list version {version} is older than version {self._version}, "
                "already trusted",
                version=str(version),
                current=str(self._version),
            )
        digest = content_digest(content)
        if digest != claims.content_digest:
            raise TrustListConflictError(
                f"trust list version {version} does not hash to its content digest"
            )
        held = self._current
        if held is not None and version == held.version and digest != held.digest:
            raise TrustListConflictError(
                f"two different trust lists claim version {version}", version=str(version)
            )
        accepted = TrustList(version, issued_at, expires, digest, content)
        self._accept(accepted)
        return accepted

    def _check_signature(
        self,
        envelope: Envelope,
        issued_at: datetime | None = None,
        expires: datetime | None = None,
    ) -> None:
        """At least one signature by a trusted key (that may sign this validity, once known)."""
        for signature in envelope.signatures:
            key = self._trusted.get(signature.keyid)
            if key is None:
                continue
            if issued_at is not None and expires is not None:
                if not key.may_sign(issued_at, expires):
                    continue
            try:
                key.public_key.verify(envelope.signed, signature.sig)
            except SignatureInvalidError:
                continue
            return
        raise SignatureInvalidError("the trust list is not signed by a trusted trustlist key")

    def _apply(self, delta: TrustListDeltaClaims) -> dict[str, Any]:
        since = delta.since
        held = self._current
        if held is None or held.version != since:
            raise TrustListConflictError(
                f"the delta applies to version {since}; the verifier holds "
                f"{'none' if held is None else held.version}: fetch the full list",
                since=str(since),
            )
        try:
            return apply_delta(held.content, delta.regions, delta.upserted, delta.removed)
        except (KeyError, TypeError) as exc:
            raise MalformedError(f"the delta is not valid: {exc}") from None

    def _accept(self, accepted: TrustList) -> None:
        rotated: dict[str, PinnedKey] = {}
        try:
            for entry in accepted.keys(HOME_REGION, KeyRole.TRUSTLIST.value):
                if entry["status"] == "revoked" or to_unix(accepted.issued_at) > entry["not_after"]:
                    continue
                rotated[str(entry["kid"])] = PinnedKey(
                    str(entry["kid"]),
                    accepted.public_key(entry),
                    from_unix(entry["not_before"]),
                    from_unix(entry["not_after"]),
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedError(f"the trust list's key entries are not valid: {exc}") from None
        if rotated:
            self._trusted = rotated
        self._current = accepted
        self._version = accepted.version


def _parse(data: bytes) -> dict[str, Any]:
    obj = loads_strict(data, max_bytes=MAX_TRUSTLIST_BYTES, max_depth=32, what="trust list")
    if not isinstance(obj, dict):
        raise MalformedError("the trust list is not a JSON object")
    return obj
