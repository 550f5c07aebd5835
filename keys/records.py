"""Frozen records of the trust registry that cross the :class:`keys.store.Store` boundary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from keys.anchors import AnchorSet
from keys.model import Region, RegionKey
from keys.timeutil import ensure_utc, from_unix, to_unix


class SubmissionKind(StrEnum):
    """What a partner submitted."""

    KEYSET = "keyset"
    KEY_REVOCATION = "key-revocation"
    REVOCATIONS = "revocations"


@dataclass(frozen=True)
class SubmissionResult:
    """What a submission did. A retry of the same submission returns the original result with
    ``duplicate`` set; nothing is applied twice."""

    kind: SubmissionKind
    region: str
    digest: str  # SHA-256 hex of the statement's signed bytes
    accepted_at: datetime
    duplicate: bool = False
    # key sets
    version: int | None = None
    keys_added: tuple[str, ...] = ()
    keys_removed: tuple[str, ...] = ()
    keys_kept: tuple[str, ...] = ()
    anchors_rotated: bool = False
    # key revocations
    kid: str | None = None
    revoked_at: datetime | None = None
    # revocation batches
    batch_id: str | None = None
    codes: int = 0
    holders: int = 0
    conversions_revoked: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "accepted_at", ensure_utc(self.accepted_at))
        if self.revoked_at is not None:
            object.__setattr__(self, "revoked_at", ensure_utc(self.revoked_at))

    def to_json(self) -> dict[str, Any]:
        """JSON form (also how the store keeps it); ``duplicate`` is not stored."""
        return {
            "kind": self.kind.value,
            "region": self.region,
            "digest": self.digest,
            "accepted_at": to_unix(self.accepted_at),
            "version": self.version,
            "keys_added": list(self.keys_added),
            "keys_removed": list(self.keys_removed),
            "keys_kept": list(self.keys_kept),
            "anchors_rotated": self.anchors_rotated,
            "kid": self.kid,
            "revoked_at": None if self.revoked_at is None else to_unix(self.revoked_at),
            "batch_id": self.batch_id,
            "codes": self.codes,
            "holders": self.holders,
            "conversions_revoked": self.conversions_revoked,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, duplicate: bool = False) -> SubmissionResult:
        """Raises ``KeyError``/``ValueError`` on a damaged record (the store translates)."""
        revoked = obj.get("revoked_at")
        return cls(
            kind=SubmissionKind(obj["kind"]),
            region=str(obj["region"]),
            digest=str(obj["digest"]),
            accepted_at=from_unix(int(obj["accepted_at"])),
            duplicate=duplicate,
            version=obj.get("version"),
            keys_added=tuple(obj.get("keys_added", ())),
            keys_removed=tuple(obj.get("keys_removed", ())),
            keys_kept=tuple(obj.get("keys_kept", ())),
            anchors_rotated=bool(obj.get("anchors_rotated", False)),
            kid=obj.get("kid"),
            revoked_at=None if revoked is None else from_unix(int(revoked)),
            batch_id=obj.get("batch_id"),
            codes=int(obj.get("codes", 0)),
            holders=int(obj.get("holders", 0)),
            conversions_revoked=int(obj.get("conversions_revoked", 0)),
        )


@dataclass(frozen=True)
class RegionTrust:
    """A region's trust state, read in one transaction: what a submission is checked against."""

    region: Region | None
    anchors: AnchorSet | None
    anchors_generation: int  # 0: none installed
    keyset_version: int  # 0: no key set published yet
    keys: tuple[RegionKey, ...] = ()


@dataclass(frozen=True)
class KeySetChange:
    """A verified key set, ready to apply atomically."""

    region: str
    version: int
    expires: datetime
    digest: str
    envelope: bytes
    keys: tuple[RegionKey, ...]  # the region's complete new list (ACTIVE; revocations merged in)
    anchors: AnchorSet | None  # new anchors, or None to keep them
    expected_version: int
    expected_generation: int
    actor: str
    at: datetime


@dataclass(frozen=True)
class RevocationBatchChange:
    """A verified revocation batch, codes and holders already keyed under the gateway's secret."""

    region: str
    batch_id: str
    effective_at: datetime
    digest: str
    codes: tuple[str, ...]  # code keys: never the partner's unkeyed code hashes
    holders: tuple[str, ...]  # keyed pseudonyms: never the partner's unkeyed hashes
    actor: str
    at: datetime


@dataclass(frozen=True)
class InstallResult:
    """What installing a partner file did."""

    region: str
    created: bool  # the region was new
    anchors_changed: bool
    region_changed: bool
    anchors_generation: int
    fingerprint: str  # of the installed anchor set

    @property
    def duplicate(self) -> bool:
        """True when installing changed nothing (the same partner file again)."""
        return not (self.created or self.anchors_changed or self.region_changed)


@dataclass(frozen=True)
class CodeRevocation:
    """One revoked code of a region (named by its :func:`keys.statements.code_hash`), revoked from
    ``effective_at``.
    """

    region: str
    code_key: str  # the keyed form of the partner's code hash (Pseudonymiser.from_code_hash)
    effective_at: datetime


@dataclass(frozen=True)
class HolderRevocation:
    """One revoked holder of a region (a keyed pseudonym, never an ID number), revoked from
    ``effective_at``.
    """

    region: str
    holder: str  # keyed pseudonym
    effective_at: datetime


@dataclass(frozen=True)
class TrustListVersion:
    """A persisted trust-list content version."""

    version: int
    digest: str
    content: bytes  # canonical JSON of the content
    created_at: datetime = field(compare=False)
