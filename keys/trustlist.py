"""The signed trust list: every region's code-signing keys and the gateway's own public keys.

One snapshot, built from one consistent registry state (no mix-and-match across regions), with
a version that increases whenever the content changes (persisted in the store) and an expiry
(freeze protection). Served in full or as a delta since a version (keys added or changed, keys
removed, all region records). Signed by the gateway's ``trustlist`` role.

Client side: :class:`TrustListVerifier` refuses an older version (``TRUSTLIST_ROLLBACK``), an
expired list (``TRUSTLIST_EXPIRED``), a bad signature (``SIGNATURE_INVALID``), and a list or
delta that contradicts the one it holds (``TRUSTLIST_CONFLICT``).

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
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from keys.crypto import PrivateKey, PublicKey, load_public_key
from keys.errors import (
    ConcurrentChangeError,
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
from keys.records import TrustListVersion
from keys.registry import RegistrySnapshot
from keys.signed import Envelope, get_int, require_keys
from keys.store import Store
from keys.timeutil import ensure_utc, from_unix, to_unix

TRUSTLIST_TYPE = "trustgw/trustlist/v1"
TRUSTLIST_DELTA_TYPE = "trustgw/trustlist-delta/v1"
DEFAULT_TTL = timedelta(hours=24)
MAX_TRUSTLIST_BYTES = 1536 * 1024
CODE_ROLE = "code"  # the role of a partner region's code-signing key in the list


# --- content -------------------------------------------------------------------------------------


def build_content(
    snapshot: RegistrySnapshot, gateway_keys: Iterable[GatewayKeyInfo]
) -> dict[str, Any]:
    """The trust list's content: regions and keys, sorted, as canonical-JSON-ready data.

    Keys of disabled regions are left out (their codes are not recognised); revoked keys stay
    in with ``revoked_at``, so that a verifier can still accept codes issued before it.
    """
    regions = [
        {
            "region": r.code,
            "name": r.name,
            "mode": r.mode.value,
            "max_age": int(r.max_age.total_seconds()),
            "enabled": r.enabled,
            "keyset_version": snapshot.keyset_versions.get(r.code, 0),
        }
        for r in sorted(snapshot.regions.values(), key=lambda r: r.code)
    ]
    keys: list[dict[str, Any]] = []
    for key in snapshot.all_keys:
        region = snapshot.region(key.region)
        if region is None or not region.enabled:
            continue
        keys.append(
            _key_entry(
                key.region, CODE_ROLE, key.kid, key.public_key, key.not_before, key.not_after,
                key.status.value, key.revoked_at,
            )
        )  # fmt: skip
    for info in gateway_keys:
        keys.append(
            _key_entry(
                HOME_REGION, info.role.value, info.kid, info.public_key, info.not_before,
                info.not_after, info.status.value, None,
            )
        )  # fmt: skip
    keys.sort(key=lambda k: (k["owner"], k["kid"]))
    return {"regions": regions, "keys": keys}


def _key_entry(
    owner: str,
    role: str,
    kid: str,
    public_key: PublicKey,
    not_before: datetime,
    not_after: datetime,
    status: str,
    revoked_at: datetime | None,
) -> dict[str, Any]:
    return {
        "owner": owner,
        "role": role,
        "kid": kid,
        "alg": public_key.alg.value,
        "public_key": public_key.to_jwk(),
        "not_before": to_unix(not_before),
        "not_after": to_unix(not_after),
        "status": status,
        "revoked_at": None if revoked_at is None else to_unix(revoked_at),
    }


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


# --- publishing (gateway side) -----------------------------------------------------------------


class TrustListKeys(Protocol):
    """What the publisher needs from the gateway's key directory."""

    def public_keys(self) -> list[GatewayKeyInfo]: ...

    def signers(self, role: KeyRole, now: datetime) -> list[tuple[GatewayKeyInfo, PrivateKey]]: ...


@dataclass(frozen=True)
class SignedTrustList:
    """A signed full list or delta, as served: ``envelope`` is what goes on the wire."""

    version: int
    since: int | None  # None: a full list
    issued_at: datetime
    expires: datetime
    envelope: bytes


class TrustListPublisher:
    """Builds, versions and signs trust lists.

    ``snapshot`` returns the current registry snapshot (one consistent state, refreshed on
    change); the store keeps the versions. A signed list is reused while at least half of its
    lifetime remains and its version is current.
    """

    def __init__(
        self,
        store: Store,
        snapshot: Callable[[], RegistrySnapshot],
        keys: Callable[[], TrustListKeys],
        *,
        ttl: timedelta = DEFAULT_TTL,
    ) -> None:
        if ttl <= timedelta(0):
            raise ValueError("the trust list's lifetime must be positive")
        self._store = store
        self._snapshot = snapshot
        self._keys = keys
        self._ttl = ttl
        self._cached: SignedTrustList | None = None

    async def current(self, now: datetime) -> TrustListVersion:
        """The version of the current content, recording a new one if the content changed.

        Raises :class:`keys.errors.StoreUnavailableError`.
        """
        content = build_content(self._snapshot(), self._keys().public_keys())
        data = canonical_json(content)
        digest = hashlib.sha256(data).hexdigest()
        for _ in range(3):
            latest = await self._store.latest_trustlist()
            if latest is not None and latest.digest == digest:
                return latest
            try:
                return await self._store.record_trustlist(
                    digest,
                    data,
                    expected_latest=0 if latest is None else latest.version,
                    now=now,
                )
            except ConcurrentChangeError:
                continue
        raise ConcurrentChangeError("trust list versions kept changing; retry")

    async def full(self, now: datetime) -> SignedTrustList:
        """The current trust list, signed. Raises :class:`keys.errors.StoreUnavailableError`,
        :class:`keys.errors.ConfigurationError` (no valid trustlist key)."""
        now = ensure_utc(now)
        current = await self.current(now)
        cached = self._cached
        if (
            cached is not None
            and cached.version == current.version
            and cached.issued_at <= now < cached.issued_at + (cached.expires - cached.issued_at) / 2
        ):
            return cached
        content = json.loads(current.content)
        signed = self._sign(
            {
                "type": TRUSTLIST_TYPE,
                "version": current.version,
                "content_digest": current.digest,
                "content": content,
            },
            current.version,
            None,
            now,
        )
        self._cached = signed
        return signed

    async def delta(self, since: int, now: datetime) -> SignedTrustList:
        """Changes since version ``since``, signed; the full list if ``since`` is unknown (0,
        never recorded, or newer than the current version).

        Raises :class:`keys.errors.StoreUnavailableError`, :class:`keys.errors.ConfigurationError`.
        """
        now = ensure_utc(now)
        current = await self.current(now)
        base = None if since <= 0 else await self._store.get_trustlist(since)
        if base is None or since > current.version:
            return await self.full(now)
        old, new = json.loads(base.content), json.loads(current.content)
        upserted, removed = diff(old, new)
        return self._sign(
            {
                "type": TRUSTLIST_DELTA_TYPE,
                "version": current.version,
                "since": since,
                "content_digest": current.digest,
                "regions": new["regions"],
                "upserted": upserted,
                "removed": removed,
            },
            current.version,
            since,
            now,
        )

    def _sign(
        self, body: dict[str, Any], version: int, since: int | None, now: datetime
    ) -> SignedTrustList:
        return sign_trustlist(body, version, since, self._keys(), now, self._ttl)


def sign_trustlist(
    body: Mapping[str, Any],
    version: int,
    since: int | None,
    keys: TrustListKeys,
    now: datetime,
    ttl: timedelta,
) -> SignedTrustList:
    """Sign a list or delta ``body`` at ``now`` (whole seconds) by :func:`signing_plan`.

    Raises :class:`ConfigurationError` when no trustlist key is valid at ``now``.
    """
    issued = ensure_utc(now).replace(microsecond=0)
    signers, expires = signing_plan(keys.signers(KeyRole.TRUSTLIST, issued), issued, ttl)
    signed = {**body, "issued_at": to_unix(issued), "expires": to_unix(expires)}
    envelope = Envelope.sign(canonical_json(signed), [(i.kid, k) for i, k in signers])
    return SignedTrustList(version, since, issued, expires, envelope.to_bytes())


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
        return self._current

    @property
    def trusted_kids(self) -> frozenset[str]:
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
        body = _parse(envelope.signed)
        kind = body.get("type")
        if kind == TRUSTLIST_TYPE:
            require_keys(
                body, ("type", "version", "issued_at", "expires", "content_digest", "content")
            )
        elif kind == TRUSTLIST_DELTA_TYPE:
            require_keys(
                body,
                ("type", "version", "since", "issued_at", "expires", "content_digest",
                 "regions", "upserted", "removed"),
            )  # fmt: skip
        else:
            raise MalformedError(f"not a trust list: type {str(kind)[:40]!r}")
        version = get_int(body, "version", minimum=1)
        issued_at = from_unix(get_int(body, "issued_at"))
        expires = from_unix(get_int(body, "expires"))
        # Only signatures by keys valid over the list's whole validity count.
        self._check_signature(envelope, issued_at, expires)
        if now < issued_at:
            raise TrustListNotYetValidError(
                f"trust list version {version} is not valid before {issued_at}"
            )
        if expires <= now:
            raise TrustListExpiredError(f"trust list version {version} expired at {expires}")
        if kind == TRUSTLIST_TYPE:
            content = body["content"]
            if not isinstance(content, dict):
                raise MalformedError("the trust list's content is not an object")
        else:
            content = self._apply(body)
        if version < self._version:
            raise TrustListRollbackError(
                f"trust list version {version} is older than version {self._version}, "
                "already trusted",
                version=str(version),
                current=str(self._version),
            )
        digest = content_digest(content)
        if digest != body["content_digest"]:
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

    def _apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        since = get_int(body, "since", minimum=1)
        held = self._current
        if held is None or held.version != since:
            raise TrustListConflictError(
                f"the delta applies to version {since}; the verifier holds "
                f"{'none' if held is None else held.version}: fetch the full list",
                since=str(since),
            )
        regions, upserted, removed = body["regions"], body["upserted"], body["removed"]
        if not all(isinstance(v, list) for v in (regions, upserted, removed)):
            raise MalformedError("a delta's regions, upserted and removed are lists")
        try:
            return apply_delta(held.content, regions, upserted, removed)
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
