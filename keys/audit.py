"""The audit trail: a hash-chained, append-only log of every registry change.

Each entry records who (an actor such as ``partner:110000`` or ``operator:cli``), what (an
action such as ``keyset.apply``), when, the region, and the state before and after as JSON. Its
hash is SHA-256 over the canonical JSON of the entry including the previous entry's hash, so that
editing, removing or reordering any entry breaks the chain. The store keeps the head (entry count
and last hash) in a separate row written in the same transaction; a truncated tail no longer
matches it. An attacker able to rewrite the whole database consistently can forge a new chain:
record :meth:`AuditHead` values elsewhere (``trustgw audit verify`` prints them) and pass one
back as ``expected`` to detect that too.

Entries never hold personal identifiers: holder revocations are logged as counts and batch ids.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from keys.errors import AuditIntegrityError
from keys.jsonutil import canonical_json
from keys.timeutil import ensure_utc, to_iso, to_unix

if TYPE_CHECKING:
    from keys.anchors import AnchorSet
    from keys.model import Region, RegionKey
    from keys.store import AuditStore

GENESIS_HASH = "0" * 64
ACTOR_PATTERN = re.compile(r"[a-z]+:[A-Za-z0-9._@:/-]{1,120}")
ACTION_PATTERN = re.compile(r"[a-z][a-z0-9._-]{0,63}")
VERIFY_CHUNK = 5000


@dataclass(frozen=True)
class AuditEvent:
    """A change about to be recorded."""

    actor: str
    action: str
    at: datetime
    region: str = ""
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", ensure_utc(self.at).replace(microsecond=0))
        if ACTOR_PATTERN.fullmatch(self.actor) is None:
            raise ValueError(f"actor {self.actor[:40]!r} is not '<kind>:<name>'")
        if ACTION_PATTERN.fullmatch(self.action) is None:
            raise ValueError(f"action {self.action[:40]!r} is not a lower-case name")


@dataclass(frozen=True)
class AuditEntry:
    """A recorded change, with its place in the chain."""

    seq: int
    at: datetime
    actor: str
    action: str
    region: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        """What the hash covers: every field but the hash itself."""
        return {
            "seq": self.seq,
            "at": to_unix(self.at),
            "actor": self.actor,
            "action": self.action,
            "region": self.region,
            "before": self.before,
            "after": self.after,
            "prev_hash": self.prev_hash,
        }

    def compute_hash(self) -> str:
        """SHA-256 hex over the canonical JSON of :meth:`body`: what ``hash`` must equal."""
        return hashlib.sha256(canonical_json(self.body())).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """For display (``--json``): the body, the hash, and the time in ISO form."""
        return {**self.body(), "time": to_iso(self.at), "hash": self.hash}


@dataclass(frozen=True)
class AuditHead:
    """How many entries the log holds and the hash of the last (GENESIS_HASH when empty)."""

    count: int
    hash: str


def chain(event: AuditEvent, head: AuditHead) -> AuditEntry:
    """The entry that appends ``event`` after ``head``."""
    # Round-trip through JSON so that what is hashed is exactly what is stored and read back.
    before = _json_roundtrip(event.before)
    after = _json_roundtrip(event.after)
    draft = AuditEntry(
        head.count + 1,
        event.at,
        event.actor,
        event.action,
        event.region,
        before,
        after,
        head.hash,
        "",
    )
    return AuditEntry(**{**draft.__dict__, "hash": draft.compute_hash()})


def _json_roundtrip(value: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if value is None:
        return None
    loaded = json.loads(canonical_json(value))
    assert isinstance(loaded, dict)
    return loaded


@dataclass
class ChainVerifier:
    """Checks entries one after another against the chain rules, then the head."""

    expected: AuditHead | None = None
    count: int = 0
    last_hash: str = GENESIS_HASH
    checkpoint_seen: bool = False

    def feed(self, entries: Iterable[AuditEntry]) -> None:
        """Raise :class:`AuditIntegrityError` at the first entry that breaks the chain."""
        for entry in entries:
            seq = self.count + 1
            if entry.seq != seq:
                raise AuditIntegrityError(
                    f"audit entry {seq} is missing or out of order (found {entry.seq})",
                    seq=str(seq),
                )
            if entry.prev_hash != self.last_hash:
                raise AuditIntegrityError(
                    f"audit entry {seq} does not follow entry {seq - 1} "
                    "(an entry was removed, reordered or edited)",
                    seq=str(seq),
                )
            if entry.compute_hash() != entry.hash:
                raise AuditIntegrityError(f"audit entry {seq} was edited", seq=str(seq))
            self.count, self.last_hash = seq, entry.hash
            if (
                self.expected is not None
                and seq == self.expected.count
                and entry.hash == self.expected.hash
            ):
                self.checkpoint_seen = True

    def finish(self, head: AuditHead) -> AuditHead:
        """Compare with the stored head (truncation) and the expected checkpoint."""
        if (self.count, self.last_hash) != (head.count, head.hash):
            raise AuditIntegrityError(
                f"the audit log holds {self.count} verifiable entries but its head records "
                f"{head.count} (entries were removed from the end, or the head was edited)",
                seq=str(self.count),
            )
        if self.expected is not None and self.expected.count > 0 and not self.checkpoint_seen:
            raise AuditIntegrityError(
                f"the audit log does not contain the recorded checkpoint entry "
                f"{self.expected.count} with hash {self.expected.hash[:16]}...: it was rewritten",
                seq=str(self.expected.count),
            )
        return head


def verify_chain(
    entries: Iterable[AuditEntry], head: AuditHead, expected: AuditHead | None = None
) -> AuditHead:
    """Verify a complete log against its stored head; return the head.

    Raises :class:`AuditIntegrityError` naming the first bad entry.
    """
    verifier = ChainVerifier(expected)
    verifier.feed(entries)
    return verifier.finish(head)


async def verify_store(store: AuditStore, expected: AuditHead | None = None) -> AuditHead:
    """Verify the store's audit log in chunks; return its head.

    Entries appended while verifying are left for the next run. Raises
    :class:`AuditIntegrityError`, :class:`keys.errors.StoreUnavailableError`.
    """
    verifier = ChainVerifier(expected)
    head, entries = await store.read_audit(0, VERIFY_CHUNK)
    while True:
        verifier.feed(e for e in entries if e.seq <= head.count)
        if len(entries) < VERIFY_CHUNK or verifier.count >= head.count or not entries:
            break
        _, entries = await store.read_audit(entries[-1].seq, VERIFY_CHUNK)
    return verifier.finish(head)


# --- what the trail records of a region, a key and an anchor set ------------------------------


def region_json(region: Region) -> dict[str, Any]:
    """A region as the audit trail records it."""
    return {
        "code": region.code,
        "name": region.name,
        "mode": region.mode.value,
        "max_age": int(region.max_age.total_seconds()),
        "enabled": region.enabled,
    }


def key_json(key: RegionKey) -> dict[str, Any]:
    """A key as the audit trail records it (fingerprint, not key bytes)."""
    return {
        "kid": key.kid,
        "alg": key.alg.value,
        "fingerprint": key.public_key.fingerprint(),
        "not_before": to_unix(key.not_before),
        "not_after": to_unix(key.not_after),
        "status": key.status.value,
        "revoked_at": None if key.revoked_at is None else to_unix(key.revoked_at),
    }


def anchors_json(anchors: AnchorSet | None) -> dict[str, Any] | None:
    """An anchor set as the audit trail records it (key ids, threshold, fingerprint)."""
    if anchors is None:
        return None
    return {
        "kids": sorted(anchors.kids),
        "threshold": anchors.threshold,
        "fingerprint": anchors.fingerprint(),
    }
