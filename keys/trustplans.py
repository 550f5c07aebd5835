"""The rules of the trust registry's changes, as pure *plans* over the state a store read.

A store reads the state a change depends on, in the change's own transaction, asks the plan
function here what to write, and writes exactly that: the rules (which anchors may replace which,
what a key set adds, keeps and removes, which conversions a revocation reaches) live here once,
and a second backend implements only persistence. Every function is pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from keys.anchors import AnchorSet
from keys.audit import AuditEvent, anchors_json, key_json, region_json
from keys.errors import AlreadyExistsError, ConcurrentChangeError, KeyIdReusedError
from keys.model import KeyStatus, Region, RegionKey
from keys.records import (
    InstallResult,
    KeySetChange,
    RevocationBatchChange,
    SubmissionKind,
    SubmissionResult,
)
from keys.timeutil import to_unix

# --- installing a partner file -------------------------------------------------------------


@dataclass(frozen=True)
class InstallPlan:
    """What installing a partner file writes: nothing at all when ``result.duplicate``."""

    region: Region | None  # the region row to write (None: unchanged)
    anchors: AnchorSet | None  # the next anchor generation to write (None: unchanged)
    result: InstallResult
    audit: AuditEvent | None


def plan_install(
    region: Region,
    anchors: AnchorSet,
    *,
    before: Region | None,
    current: AnchorSet | None,
    generation: int,
    replace: bool,
    actor: str,
    now: datetime,
) -> InstallPlan:
    """Add a region with its anchors, or update its name, mode and maximum age.

    Anchors are installed when the region has none; different anchors replace the current ones
    only with ``replace`` (an operator's break-glass re-keying, audited). The region's enabled
    flag is kept. Identical content changes nothing. Raises :class:`AlreadyExistsError` (other
    anchors and not ``replace``).
    """
    stored = region if before is None else _with_enabled(region, before.enabled)
    region_changed = before is not None and before != stored
    anchors_changed = current is None or current.to_json() != anchors.to_json()
    if anchors_changed and current is not None and not replace:
        raise AlreadyExistsError(
            f"region {region.code} already has other anchors: rotate them with a key set "
            "signed by the old and the new anchors, or replace them explicitly",
            region=region.code,
        )
    result = InstallResult(
        region.code,
        created=before is None,
        anchors_changed=anchors_changed,
        region_changed=region_changed,
        anchors_generation=generation + 1 if anchors_changed else generation,
        fingerprint=anchors.fingerprint(),
    )
    if result.duplicate:
        return InstallPlan(None, None, result, None)
    event = AuditEvent(
        actor,
        "partner.install" if before is None else "partner.update",
        now,
        region.code,
        None
        if before is None
        else {"region": region_json(before), "anchors": anchors_json(current)},
        {"region": region_json(stored), "anchors": anchors_json(anchors)},
    )
    return InstallPlan(
        stored if before is None or region_changed else None,
        anchors if anchors_changed else None,
        result,
        event,
    )


def _with_enabled(region: Region, enabled: bool) -> Region:
    return Region(region.code, region.name, region.mode, region.max_age, enabled)


# --- applying a key set --------------------------------------------------------------------


@dataclass(frozen=True)
class RemovedKey:
    """A key a key set dropped, kept so that its id is never reused and its revocation stays."""

    kid: str
    alg: str
    spki: bytes
    revoked_at: datetime | None


@dataclass(frozen=True)
class KeySetPlan:
    """What applying a key set writes, and its result and audit event."""

    remove: tuple[str, ...]  # kids moved from region_keys to removed_keys
    put: tuple[RegionKey, ...]  # the region's complete key list afterwards
    restore: tuple[str, ...]  # kids leaving removed_keys (they return)
    anchors: AnchorSet | None  # the next anchor generation, if the key set rotates them
    result: SubmissionResult
    audit: AuditEvent


def plan_keyset(
    change: KeySetChange,
    *,
    version: int,
    generation: int,
    anchors_before: AnchorSet | None,
    current: Iterable[RegionKey],
    removed: Mapping[str, RemovedKey],
) -> KeySetPlan:
    """Make ``change.keys`` the region's complete key list.

    Keys absent from the new list are removed (codes they signed stop verifying); keys listed are
    added or get the new window, keeping any revocation time they had (also from a removal).
    Raises :class:`ConcurrentChangeError` (version or anchors changed since they were checked),
    :class:`KeyIdReusedError` (a key id names another key, now or before).
    """
    if (version, generation) != (change.expected_version, change.expected_generation):
        raise ConcurrentChangeError(
            f"region {change.region} changed while its key set was verified",
            region=change.region,
        )
    old = {k.kid: k for k in current}
    new_kids = {k.kid for k in change.keys}
    put = []
    restore = []
    for key in change.keys:
        same = (key.alg.value, key.public_key.spki)
        revoked_at: datetime | None = None
        kept = old.get(key.kid)
        gone = removed.get(key.kid)
        if kept is not None:
            if (kept.alg.value, kept.public_key.spki) != same:
                raise KeyIdReusedError(
                    f"key id {key.kid} of region {key.region} names another key",
                    region=key.region,
                    kid=key.kid,
                )
            revoked_at = kept.revoked_at
        elif gone is not None:
            if (gone.alg, gone.spki) != same:
                raise KeyIdReusedError(
                    f"key id {key.kid} of region {key.region} named another key before",
                    region=key.region,
                    kid=key.kid,
                )
            revoked_at = gone.revoked_at
            restore.append(key.kid)
        status = KeyStatus.REVOKED if revoked_at is not None else KeyStatus.ACTIVE
        put.append(replace(key, status=status, revoked_at=revoked_at))
    remove = tuple(sorted(set(old) - new_kids))
    after = sorted(put, key=lambda k: (k.not_before, k.kid))
    result = SubmissionResult(
        SubmissionKind.KEYSET,
        change.region,
        change.digest,
        change.at,
        version=change.version,
        keys_added=tuple(sorted(new_kids - set(old))),
        keys_removed=remove,
        keys_kept=tuple(sorted(new_kids & set(old))),
        anchors_rotated=change.anchors is not None,
    )
    event = AuditEvent(
        change.actor,
        "keyset.apply",
        change.at,
        change.region,
        {
            "version": version,
            "keys": [key_json(k) for k in old.values()],
            "anchors": anchors_json(anchors_before),
        },
        {
            "version": change.version,
            "digest": change.digest,
            "expires": to_unix(change.expires),
            "keys": [key_json(k) for k in after],
            "anchors": anchors_json(change.anchors or anchors_before),
        },
    )
    return KeySetPlan(remove, tuple(put), tuple(restore), change.anchors, result, event)


# --- revocation batches --------------------------------------------------------------------


@dataclass(frozen=True)
class StoredConversion:
    """What a revocation needs to know of a stored conversion."""

    source_key: str
    holder: str
    issued_at: datetime
    revoked_at: datetime | None


def conversions_to_revoke(
    change: RevocationBatchChange, conversions: Iterable[StoredConversion]
) -> dict[str, datetime]:
    """The conversions a batch revokes, by source key, with their new ``revoked_at``.

    A conversion is revoked with its source code (whenever issued) or its holder (a source issued
    before the effective time); a revocation time only ever moves earlier.
    """
    codes, holders, at = set(change.codes), set(change.holders), change.effective_at
    revoked = {}
    for c in conversions:
        reached = c.source_key in codes or (c.holder in holders and c.issued_at < at)
        if reached and (c.revoked_at is None or c.revoked_at > at):
            revoked[c.source_key] = at
    return revoked


def revocation_result(change: RevocationBatchChange, conversions: int) -> SubmissionResult:
    """The result of an applied revocation batch."""
    return SubmissionResult(
        SubmissionKind.REVOCATIONS,
        change.region,
        change.digest,
        change.at,
        batch_id=change.batch_id,
        codes=len(change.codes),
        holders=len(change.holders),
        conversions_revoked=conversions,
    )


def revocation_audit(change: RevocationBatchChange, conversions: int) -> AuditEvent:
    """Counts and the batch id only: no code or holder identifiers in the audit trail."""
    return AuditEvent(
        change.actor,
        "revocations.apply",
        change.at,
        change.region,
        None,
        {
            "batch_id": change.batch_id,
            "digest": change.digest,
            "effective_at": to_unix(change.effective_at),
            "codes": len(change.codes),
            "holders": len(change.holders),
            "conversions_revoked": conversions,
        },
    )
