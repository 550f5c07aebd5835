"""The store's roles: one narrow protocol per kind of consumer, declared in one place.

A consumer takes the narrowest role it needs (the key registry a :class:`RegistryStore`, the
conversion writer a :class:`ConversionStore`, ...). :class:`keys.store.sqlite.SQLiteStore`
implements them all; a PostgreSQL backend implements the same protocols. Only domain records
cross them, never SQL.

Every implementation raises :class:`keys.errors.StoreUnavailableError` when the database itself
fails (retry later) and leaves nothing changed when a write fails; registry refusals are the
documented :class:`keys.errors.RegistryError` subclasses; anything else is a bug and propagates.
Writes are audited as ``actor`` at ``now`` where they take them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol, TypeVar

from keys.anchors import AnchorSet
from keys.audit import AuditEntry, AuditEvent, AuditHead
from keys.keyring import KeyringChange, KeyringRecord
from keys.model import ConversionRecord, IssuedHomeCode, Region, RegionKey
from keys.personal import (
    DeclarationCount,
    DeclarationRecord,
    DeclareResult,
    PurgeResult,
    RecognitionEntry,
    StockBatch,
    StockBatchResult,
    StockJob,
    StockOutputRow,
)
from keys.places import Contact, Venue, VisitEntry
from keys.records import (
    CodeRevocation,
    HolderRevocation,
    InstallResult,
    KeySetChange,
    RegionTrust,
    RevocationBatchChange,
    SubmissionResult,
    TrustListVersion,
)
from keys.store.rows import DEFAULT_ACTOR


@dataclass(frozen=True)
class RegistryData:
    """Everything the registry holds, read in one consistent transaction."""

    version: int
    regions: tuple[Region, ...]
    keys: tuple[RegionKey, ...]
    code_revocations: tuple[CodeRevocation, ...] = ()
    holder_revocations: tuple[HolderRevocation, ...] = ()
    keyset_versions: tuple[tuple[str, int], ...] = ()  # (region, current key-set version)


class RevocationSink(Protocol):
    """What takes revocation rows streamed from the store
    (:class:`keys.revocations.RevocationRows`): ``(region, keyed value, effective unix
    seconds)``, codes before holders."""

    def add_codes(self, rows: Iterable[tuple[str, str, int]]) -> None:
        """Code revocations: (region, code key, effective seconds)."""
        ...

    def add_holders(self, rows: Iterable[tuple[str, str, int]]) -> None:
        """Holder revocations: (region, pseudonym, effective seconds)."""
        ...


_Sink = TypeVar("_Sink", bound=RevocationSink)


class HealthStore(Protocol):
    """Whether the database answers (the health check)."""

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` unless the database answers."""
        ...


class RegistryStore(Protocol):
    """Regions and their code-signing keys, as the key registry reads and changes them."""

    async def registry_version(self) -> int:
        """A counter that increases with every change to regions, keys or revocations."""
        ...

    async def read_registry(self) -> RegistryData:
        """Version, regions, keys, revocations and key-set versions in one consistent read."""
        ...

    async def read_registry_changes(
        self, revocations_after: int, sink: Callable[[], _Sink]
    ) -> tuple[RegistryData, _Sink, int]:
        """Version, regions, keys and key-set versions (no revocations in the data); a new
        ``sink()`` fed the revocations of the batches applied after audit position
        ``revocations_after`` (all of them when negative); the position now read up to. One
        consistent read."""
        ...

    async def list_regions(self) -> list[Region]:
        """All regions, ordered by code."""
        ...

    async def list_keys(self, region: str | None = None) -> list[RegionKey]:
        """All keys, or one region's, ordered by region, not_before, kid."""
        ...

    async def region_trust(self, region: str) -> RegionTrust:
        """A region, its current anchors, key-set version and keys, from one read."""
        ...

    async def upsert_region(
        self, region: Region, *, actor: str = DEFAULT_ACTOR, now: datetime | None = None
    ) -> None:
        """Insert or replace a region (its keys are kept); audited only if it changed."""
        ...

    async def set_region_enabled(
        self, code: str, enabled: bool, *, actor: str = DEFAULT_ACTOR, now: datetime | None = None
    ) -> None:
        """Enable or disable a region; :class:`NotFoundError` if unknown."""
        ...

    async def add_key(
        self, key: RegionKey, *, actor: str = DEFAULT_ACTOR, now: datetime | None = None
    ) -> bool:
        """Insert a key; False when an identical key exists (an idempotent retry).

        Raises :class:`AlreadyExistsError` (same kid, other content), :class:`KeyIdReusedError`,
        :class:`NotFoundError` (unknown region).
        """
        ...

    async def revoke_key(
        self,
        region: str,
        kid: str,
        at: datetime,
        *,
        actor: str = DEFAULT_ACTOR,
        now: datetime | None = None,
    ) -> RegionKey:
        """Revoke a key from ``at`` on (an earlier revocation time is kept); returns it as
        stored. Raises :class:`NotFoundError`."""
        ...

    async def set_key_window(
        self, current: RegionKey, updated: RegionKey, *, actor: str, now: datetime
    ) -> RegionKey:
        """Give ``current`` the window of ``updated`` (planned by :mod:`keys.keywindow`).

        Raises :class:`ConcurrentChangeError` unless the key is still stored as ``current``.
        """
        ...


class TrustStore(Protocol):
    """Partner submissions: anchors, key sets, key and code/holder revocations."""

    async def region_trust(self, region: str) -> RegionTrust:
        """A region, its current anchors, key-set version and keys, from one read."""
        ...

    async def all_anchors(self) -> dict[str, AnchorSet]:
        """Every region's current anchors."""
        ...

    async def find_submission(self, digest: str) -> SubmissionResult | None:
        """The result of the submission with that digest (flagged duplicate), or None."""
        ...

    async def install_partner(
        self, region: Region, anchors: AnchorSet, *, replace: bool, actor: str, now: datetime
    ) -> InstallResult:
        """Add or update a region with its anchors (:func:`keys.trustplans.plan_install`)."""
        ...

    async def apply_keyset(self, change: KeySetChange) -> SubmissionResult:
        """Replace a region's keys (and anchors) atomically (:func:`keys.trustplans.plan_keyset`);
        a known digest returns the earlier result as a duplicate."""
        ...

    async def apply_key_revocation(
        self,
        region: str,
        kid: str,
        compromised_at: datetime,
        *,
        digest: str,
        actor: str,
        now: datetime,
    ) -> SubmissionResult:
        """Revoke a key (current or removed) from ``compromised_at`` on, only ever earlier.
        Raises :class:`NotFoundError` if the region never had that key."""
        ...

    async def apply_revocation_batch(self, change: RevocationBatchChange) -> SubmissionResult:
        """Record code and holder revocations and revoke the conversions they reach
        (:func:`keys.trustplans.conversions_to_revoke`). Raises :class:`BatchConflictError`,
        :class:`NotFoundError`."""
        ...

    async def list_revocations(
        self, region: str | None = None
    ) -> tuple[list[CodeRevocation], list[HolderRevocation]]:
        """Code revocations (code keys) ordered by region and code key, and holder revocations
        (pseudonyms) ordered by region, holder and effective time."""
        ...


class AuditStore(Protocol):
    """The audit trail, read in order."""

    async def read_audit(self, after_seq: int, limit: int) -> tuple[AuditHead, list[AuditEntry]]:
        """The audit head and up to ``limit`` entries with seq > ``after_seq``, in seq order."""
        ...


class TrustListStore(Protocol):
    """The signed trust list's content versions."""

    async def latest_trustlist(self) -> TrustListVersion | None:
        """The newest trust-list content version, or None."""
        ...

    async def get_trustlist(self, version: int) -> TrustListVersion | None:
        """A kept trust-list content version, or None."""
        ...

    async def record_trustlist(
        self, digest: str, content: bytes, *, expected_latest: int, now: datetime
    ) -> TrustListVersion:
        """Store ``content`` as version ``expected_latest + 1`` unless it is the latest already.
        Raises :class:`ConcurrentChangeError` if another version was recorded meanwhile."""
        ...

    async def raise_trustlist_floor(self, floor: int, *, now: datetime) -> TrustListVersion:
        """Make every version published from now on greater than ``floor`` (after a restore:
        above anything published before it); returns the newest version. Raises
        ``ValueError`` for a negative ``floor``."""
        ...


class ConversionStore(Protocol):
    """Partner conversions, written in batches by the conversion writer."""

    async def claim_conversions(
        self, records: Sequence[ConversionRecord]
    ) -> list[ConversionRecord]:
        """Store the records whose source has no conversion yet, in one transaction, and return
        the stored record for each (an earlier conversion wins)."""
        ...


class HomeCodeStore(Protocol):
    """The home codes the gateway issued, read by code id (the status call)."""

    async def home_code(self, code_id: str) -> IssuedHomeCode | None:
        """The home code issued under ``code_id`` (partner or stock conversion), or None."""
        ...


class RecognitionStore(Protocol):
    """The recognition log, written in batches."""

    async def append_recognitions(self, entries: Sequence[RecognitionEntry]) -> None:
        """Append decided codes (code ids already keyed) to the log, in one transaction."""
        ...


class StockStore(Protocol):
    """Stock certificate conversions and their batch jobs."""

    async def open_stock_job(self, digest: str, source: str, now: datetime) -> StockJob:
        """The batch job of the file with SHA-256 ``digest``, created if new."""
        ...

    async def commit_stock_batch(self, batch: StockBatch) -> StockBatchResult:
        """Store a batch of stock conversions and advance the job, in one transaction.
        Raises :class:`ConcurrentChangeError` if the job is no longer at ``batch.after_row``."""
        ...

    async def finish_stock_job(self, digest: str, now: datetime) -> StockJob:
        """Mark a batch job complete."""
        ...


class StockOutputStore(Protocol):
    """What batch jobs produced, to hand the codes out (``convert-batch --out``, ``stock``)."""

    async def list_stock_jobs(self, limit: int = 1000) -> list[StockJob]:
        """Batch jobs, the most recently started first, at most ``limit`` (1..100000)."""
        ...

    async def find_stock_job(self, prefix: str) -> StockJob:
        """The job whose SHA-256 starts with ``prefix`` (8 to 64 hex digits). Raises
        ``ValueError`` (a bad or ambiguous prefix), :class:`keys.errors.NotFoundError`."""
        ...

    async def stock_job_rows(
        self, digest: str, *, after_row: int = 0, limit: int = 10_000
    ) -> list[StockOutputRow]:
        """The output rows of job ``digest`` after row ``after_row``, in order, at most
        ``limit``: page with the last row's number."""
        ...


class DeclarationStore(Protocol):
    """Arrival declarations: one current declaration per holder, earlier ones superseded."""

    async def declare(self, record: DeclarationRecord, now: datetime) -> DeclareResult:
        """Store ``record`` as its holder's current declaration, superseding the one before; a
        current one with the same digest and a code valid at ``now`` is returned instead."""
        ...

    async def get_declaration(self, ident: str) -> DeclarationRecord | None:
        """The declaration with that id, or None."""
        ...

    async def count_declarations(
        self,
        by: Sequence[str] = (),
        *,
        since: date | None = None,
        until: date | None = None,
        superseded: bool = False,
    ) -> list[DeclarationCount]:
        """Declarations grouped by some of origin, day (arrival date) and colour."""
        ...


class PurgeStore(Protocol):
    """The retention purge."""

    async def purge(
        self,
        *,
        recognitions_before: datetime | None,
        conversions_before: datetime | None,
        dry_run: bool = False,
    ) -> PurgeResult:
        """Delete log entries and expired conversions older than the cut-offs (None: skip a
        kind); a partner conversion revoked at or after ``conversions_before`` is kept."""
        ...


class PlaceStore(Protocol):
    """Venues, their visits and the tracing queries over them (keys/store/places.py)."""

    async def place_version(self) -> int:
        """The venues' change counter (increases with every venue change)."""
        ...

    async def add_venue(self, venue: Venue, *, actor: str, now: datetime) -> Venue:
        """Store a new venue, audited. Raises :class:`AlreadyExistsError`."""
        ...

    async def set_venue_enabled(
        self, venue_id: str, enabled: bool, *, actor: str, now: datetime
    ) -> Venue:
        """Enable or disable a venue (audited when it changes). Raises :class:`NotFoundError`."""
        ...

    async def set_venue_code(
        self, venue_id: str, code: str, kid: str, *, actor: str, now: datetime
    ) -> Venue:
        """Replace a venue's place code (audited). Raises :class:`NotFoundError`."""
        ...

    async def get_venue(self, venue_id: str) -> Venue:
        """One venue. Raises :class:`NotFoundError`."""
        ...

    async def list_venues(self, *, include_disabled: bool = True) -> list[Venue]:
        """Every venue (or the enabled ones), by division, name and id."""
        ...

    async def append_visits(self, entries: Sequence[VisitEntry]) -> None:
        """Append visits in one transaction."""
        ...

    async def visits_of(
        self, holders: Sequence[str], start: datetime, end: datetime, *, limit: int
    ) -> list[VisitEntry]:
        """The visits of any of ``holders`` from ``start`` to ``end``, oldest first."""
        ...

    async def contacts_of(
        self,
        holders: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        margin_seconds: int,
        limit: int,
    ) -> list[Contact]:
        """Other holders at the same venues within ``margin_seconds`` of those visits."""
        ...

    async def purge_visits(self, before: datetime, *, dry_run: bool = False) -> int:
        """Delete (or count) the visits recorded before ``before``."""
        ...

    async def record_trace(self, event: AuditEvent) -> None:
        """Write a tracing query to the audit trail."""
        ...


class GatewayKeyStore(Protocol):
    """The gateway's own keys, sealed (:mod:`keys.keyring`), beside the registry: every replica
    reads the same rows. Each change also increases :meth:`RegistryStore.registry_version`, so
    that replicas watching the registry reload the keys."""

    async def keyring_generation(self) -> int:
        """The keyring's change counter (0 while the database holds no keyring)."""
        ...

    async def read_keyring(self) -> KeyringRecord | None:
        """The whole keyring in one read, or None."""
        ...

    async def create_keyring(self, record: KeyringRecord, *, actor: str) -> bool:
        """Store a new keyring; False (nothing written) if the database holds one already."""
        ...

    async def change_keyring(self, change: KeyringChange) -> int:
        """Apply ``change`` whole and return the new generation. Raises
        :class:`ConcurrentChangeError` unless the keyring is at ``change.expected_generation``."""
        ...


class Store(
    HealthStore,
    GatewayKeyStore,
    RegistryStore,
    TrustStore,
    AuditStore,
    TrustListStore,
    ConversionStore,
    HomeCodeStore,
    RecognitionStore,
    StockStore,
    StockOutputStore,
    DeclarationStore,
    PurgeStore,
    PlaceStore,
    Protocol,
):
    """Every role at once: what a whole gateway process opens (:class:`SQLiteStore`)."""

    async def close(self) -> None:
        """Release the connection. Idempotent."""
        ...
