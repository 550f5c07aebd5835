"""The gateway side of the trust list: its content from one registry snapshot, versioned in the
store, signed and reused while fresh (docs/trust-registry.md §9).

Apart from :mod:`keys.trustlist` (the format, signing and the offline verifier) so that a
verifier imports no store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from keys.crypto import PublicKey
from keys.errors import (
    ConcurrentChangeError,
)
from keys.jsonutil import canonical_json
from keys.keylabels import labelled
from keys.keystore import GatewayKeyInfo
from keys.model import HOME_REGION
from keys.records import TrustListVersion
from keys.registry import RegistrySnapshot
from keys.store import Store
from keys.timeutil import ensure_utc, to_unix
from keys.trustclaims import TrustListClaims, TrustListDeltaClaims
from keys.trustlist import (
    CODE_ROLE,
    DEFAULT_TTL,
    PublishedTrustList,
    TrustListKeys,
    diff,
    sign_trustlist,
)


def build_content(
    snapshot: RegistrySnapshot, gateway_keys: Iterable[GatewayKeyInfo], *, now: datetime
) -> dict[str, Any]:
    """The trust list's content: regions and keys, sorted, as canonical-JSON-ready data.

    The gateway's keys carry their status at ``now`` (:mod:`keys.keylabels`): a staged
    rotation's new key is ``pending`` until it signs, so the list changes (a new version) when
    it starts to.

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
    for info, label in labelled(gateway_keys, now):
        keys.append(
            _key_entry(
                HOME_REGION, info.role.value, info.kid, info.public_key, info.not_before,
                info.not_after, label.value, info.revoked_at,
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
        self._cached: PublishedTrustList | None = None

    async def current(self, now: datetime) -> TrustListVersion:
        """The version of the current content, recording a new one if the content changed.

        Raises :class:`keys.errors.StoreUnavailableError`.
        """
        content = build_content(self._snapshot(), self._keys().public_keys(), now=now)
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

    async def full(self, now: datetime) -> PublishedTrustList:
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
        signed = self._sign(TrustListClaims(current.version, current.digest, content), now)
        self._cached = signed
        return signed

    async def delta(self, since: int, now: datetime) -> PublishedTrustList:
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
        claims = TrustListDeltaClaims(
            current.version, since, current.digest, new["regions"], upserted, removed
        )
        return self._sign(claims, now)

    def _sign(
        self, claims: TrustListClaims | TrustListDeltaClaims, now: datetime
    ) -> PublishedTrustList:
        return sign_trustlist(claims, self._keys(), now, self._ttl)
