"""The store roles (:mod:`keys.store.protocols`) once, over either backend's execution model.

:class:`StoreFacade` holds every role method: each is one unit of work of an aggregate module
(``regions``, ``trust``, ``audit``, ``trustlists``, ``conversions``, ``personal``), a plain
function of a :class:`keys.store.dbapi.Connection` run whole in one transaction and one hop by
the backend's :meth:`StoreFacade._read` / :meth:`StoreFacade._write`. The backends
(:class:`keys.store.sqlitestore.SQLiteStore`, :class:`keys.store.postgres.PostgresStore`) only
open, migrate, close and run units of work; the SQL is the same on both.

A write is *exclusive* unless marked ``concurrent``: exclusive writes (every registry, trust,
audit, trust-list, stock-job and purge change) run one at a time across every process on the
database, as SQLite's write lock makes them; ``concurrent`` writes (conversions and the
recognition log, the hot path) may run beside each other, never beside an exclusive one. The
SQLite backend serialises every write anyway.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import TypeVar

from keys.anchors import AnchorSet
from keys.audit import AuditEntry, AuditHead
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
from keys.store import (
    audit,
    conversions,
    declarations,
    keyring,
    personal,
    regions,
    stockoutput,
    trust,
    trustlists,
)
from keys.store.dbapi import Connection
from keys.store.places import PlaceStoreMethods
from keys.store.protocols import RegistryData, RevocationSink
from keys.store.rows import DEFAULT_ACTOR, check_actor, ts
from keys.timeutil import utcnow

_R = TypeVar("_R")
_Sink = TypeVar("_Sink", bound=RevocationSink)


class StoreFacade(PlaceStoreMethods, ABC):
    """Every store role, over a backend's :meth:`_read` and :meth:`_write`."""

    @abstractmethod
    async def close(self) -> None:
        """Close the store. Idempotent; later calls raise :class:`StoreUnavailableError`."""

    @abstractmethod
    async def _read(self, what: str, fn: Callable[[Connection], _R]) -> _R:
        """``fn(conn)`` in one consistent read-only transaction, in one hop."""

    @abstractmethod
    async def _write(
        self, what: str, fn: Callable[[Connection], _R], *, concurrent: bool = False
    ) -> _R:
        """``fn(conn)`` in one write transaction, in one hop: committed if it returns, rolled
        back if it raises. ``concurrent``: it may run beside other concurrent writes (module
        docstring). Raises :class:`StoreUnavailableError` when the database fails."""

    # -- health and registry -----------------------------------------------------------------

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` unless the database answers a read."""
        await self.registry_version()

    async def registry_version(self) -> int:
        """The registry's change counter."""
        return await self._read("registry_version", regions.version)

    async def read_registry(self) -> RegistryData:
        """Version, regions, keys, revocations and key-set versions from one read."""

        def read(conn: Connection) -> RegistryData:
            codes, holders = trust.revocations(conn, None)
            return RegistryData(
                regions.version(conn),
                tuple(regions.regions(conn)),
                tuple(regions.keys(conn, None)),
                tuple(codes),
                tuple(holders),
                regions.keyset_versions(conn),
            )

        return await self._read("read_registry", read)

    async def read_registry_changes(
        self, revocations_after: int, sink: Callable[[], _Sink]
    ) -> tuple[RegistryData, _Sink, int]:
        """Version, regions, keys and key-set versions; the revocations of the batches applied
        after audit position ``revocations_after`` (every one when negative) streamed into a
        new ``sink()``; the audit position read up to. One read (a retry starts a new sink)."""

        def read(conn: Connection) -> tuple[RegistryData, _Sink, int]:
            data = RegistryData(
                regions.version(conn),
                tuple(regions.regions(conn)),
                tuple(regions.keys(conn, None)),
                keyset_versions=regions.keyset_versions(conn),
            )
            into = sink()
            position = trust.stream_revocations(conn, revocations_after, into)
            return data, into, position

        return await self._read("read_registry_changes", read)

    async def list_regions(self) -> list[Region]:
        """All regions ordered by code."""
        return await self._read("list_regions", regions.regions)

    async def list_keys(self, region: str | None = None) -> list[RegionKey]:
        """All keys (or ``region``'s), ordered by region, not_before, kid."""
        return await self._read("list_keys", lambda c: regions.keys(c, region))

    async def region_trust(self, region: str) -> RegionTrust:
        """A region with its anchors, key-set version and keys, from one read."""
        return await self._read("region_trust", lambda c: trust.region_trust(c, region))

    async def upsert_region(
        self, region: Region, *, actor: str = DEFAULT_ACTOR, now: datetime | None = None
    ) -> None:
        """Insert ``region`` or replace the stored one (its keys are kept); the version
        increases and the change is audited only if something changed."""
        at = now or utcnow()
        await self._write("upsert_region", lambda c: regions.upsert_region(c, region, actor, at))

    async def set_region_enabled(
        self, code: str, enabled: bool, *, actor: str = DEFAULT_ACTOR, now: datetime | None = None
    ) -> None:
        """Enable or disable recognition of a region (audited when it changes).
        Raises :class:`NotFoundError` if the region is unknown."""
        at = now or utcnow()
        await self._write(
            "set_region_enabled", lambda c: regions.set_region_enabled(c, code, enabled, actor, at)
        )

    async def add_key(
        self, key: RegionKey, *, actor: str = DEFAULT_ACTOR, now: datetime | None = None
    ) -> bool:
        """Insert a partner key; False if the same key is already stored.

        "The same": algorithm, key bytes and window (to the second), and a status that is
        ACTIVE or the stored one: a late retry after a revocation is a no-op, never an
        un-revocation. Raises :class:`NotFoundError` (unknown region),
        :class:`AlreadyExistsError` (other content), :class:`KeyIdReusedError`.
        """
        at = now or utcnow()
        return await self._write("add_key", lambda c: regions.add_key(c, key, actor, at))

    async def revoke_key(
        self,
        region: str,
        kid: str,
        at: datetime,
        *,
        actor: str = DEFAULT_ACTOR,
        now: datetime | None = None,
    ) -> RegionKey:
        """Mark a key REVOKED from ``at`` on (an earlier revocation time is kept) and return it.
        Raises :class:`NotFoundError` if the key is unknown."""
        when = now or utcnow()
        return await self._write(
            "revoke_key", lambda c: regions.revoke_key(c, region, kid, at, actor, when)
        )

    async def set_key_window(
        self, current: RegionKey, updated: RegionKey, *, actor: str, now: datetime
    ) -> RegionKey:
        """Store ``updated``'s window for ``current`` (same key), audited as ``key.update``.
        Raises :class:`ConcurrentChangeError` (nothing written) unless the key is still stored
        as ``current``; ``ValueError`` for another key or a bad actor."""
        check_actor(actor)
        same = (current.region, current.kid, current.alg, current.public_key.spki)
        if (updated.region, updated.kid, updated.alg, updated.public_key.spki) != same:
            raise ValueError("set_key_window changes only the window of one key")
        return await self._write(
            "set_key_window", lambda c: regions.set_key_window(c, current, updated, actor, now)
        )

    # -- the gateway's own keys ------------------------------------------------------------

    async def keyring_generation(self) -> int:
        """The gateway keyring's change counter (0: none stored yet)."""
        return await self._read("keyring_generation", keyring.generation)

    async def read_keyring(self) -> KeyringRecord | None:
        """The gateway keyring (keys sealed), or None."""
        return await self._read("read_keyring", keyring.read)

    async def create_keyring(self, record: KeyringRecord, *, actor: str) -> bool:
        """Store a new keyring; False if the database holds one already (nothing written)."""
        check_actor(actor)
        return await self._write("create_keyring", lambda c: keyring.create(c, record, actor))

    async def change_keyring(self, change: KeyringChange) -> int:
        """Apply a planned keyring change (:mod:`keys.keyring`) whole; the new generation.
        Raises :class:`ConcurrentChangeError`, :class:`AlreadyExistsError`."""
        check_actor(change.actor)
        return await self._write("change_keyring", lambda c: keyring.apply(c, change))

    # -- trust submissions -------------------------------------------------------------------

    async def all_anchors(self) -> dict[str, AnchorSet]:
        """Every region's current anchor set."""
        return await self._read("all_anchors", trust.all_anchors)

    async def find_submission(self, digest: str) -> SubmissionResult | None:
        """The stored result of an accepted submission, flagged as a duplicate, or None."""
        return await self._read("find_submission", lambda c: trust.submission(c, digest))

    async def install_partner(
        self, region: Region, anchors: AnchorSet, *, replace: bool, actor: str, now: datetime
    ) -> InstallResult:
        """Add a region with its anchors, or update it (rules:
        :func:`keys.trustplans.plan_install`). Raises :class:`AlreadyExistsError`."""
        return await self._write(
            "install_partner",
            lambda c: trust.install_partner(c, region, anchors, replace, actor, now),
        )

    async def apply_keyset(self, change: KeySetChange) -> SubmissionResult:
        """Make ``change.keys`` the region's complete key list (:func:`keys.trustplans.
        plan_keyset`). Raises :class:`ConcurrentChangeError`, :class:`KeyIdReusedError`,
        :class:`NotFoundError`."""
        return await self._write("apply_keyset", lambda c: trust.apply_keyset(c, change))

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
        """Revoke a key (also one a key set removed) from ``compromised_at`` on, only ever
        earlier. Raises :class:`NotFoundError` if the region never had the key."""
        return await self._write(
            "apply_key_revocation",
            lambda c: trust.apply_key_revocation(
                c, region, kid, compromised_at, digest, actor, now
            ),
        )

    async def apply_revocation_batch(self, change: RevocationBatchChange) -> SubmissionResult:
        """Record a batch of code and holder revocations and revoke the conversions it
        reaches. Raises :class:`BatchConflictError`, :class:`NotFoundError`."""
        return await self._write(
            "apply_revocation_batch", lambda c: trust.apply_revocation_batch(c, change)
        )

    async def list_revocations(
        self, region: str | None = None
    ) -> tuple[list[CodeRevocation], list[HolderRevocation]]:
        """Code and holder revocations (of ``region``, or all)."""
        return await self._read("list_revocations", lambda c: trust.revocations(c, region))

    # -- audit and trust lists ---------------------------------------------------------------

    async def read_audit(self, after_seq: int, limit: int) -> tuple[AuditHead, list[AuditEntry]]:
        """The audit head and up to ``limit`` entries with seq > ``after_seq``, from one read.
        Raises ``ValueError`` for a bad ``limit``, :class:`AuditIntegrityError`."""
        return await self._read("read_audit", lambda c: audit.read(c, after_seq, limit))

    async def latest_trustlist(self) -> TrustListVersion | None:
        """The newest trust-list content version."""
        return await self._read("latest_trustlist", lambda c: trustlists.get(c, None))

    async def get_trustlist(self, version: int) -> TrustListVersion | None:
        """One trust-list content version."""
        return await self._read("get_trustlist", lambda c: trustlists.get(c, version))

    async def record_trustlist(
        self, digest: str, content: bytes, *, expected_latest: int, now: datetime
    ) -> TrustListVersion:
        """Record ``content`` as the next version, unless it already is the latest.
        Raises :class:`ConcurrentChangeError` if the latest is not ``expected_latest``."""
        at = ts(now)
        return await self._write(
            "record_trustlist",
            lambda c: trustlists.record(c, digest, content, expected_latest, at),
        )

    async def raise_trustlist_floor(self, floor: int, *, now: datetime) -> TrustListVersion:
        """Make every version recorded from now on greater than ``floor``: the newest content
        is recorded again as ``floor + 1`` unless a newer version exists. Returns the newest.
        Raises ``ValueError`` for a ``floor`` out of 0..2**53-2."""
        if isinstance(floor, bool) or not 0 <= floor < 2**53 - 1:
            raise ValueError("a trust-list floor is a version number from 0 to 2**53 - 2")
        at = ts(now)
        return await self._write(
            "raise_trustlist_floor", lambda c: trustlists.raise_floor(c, floor, at)
        )

    # -- conversions -------------------------------------------------------------------------

    async def get_conversion(self, region: str, source_key: str) -> ConversionRecord | None:
        """The record of a converted partner code (by its code key), or None."""
        return await self._read("get_conversion", lambda c: conversions.get(c, region, source_key))

    async def home_code(self, code_id: str) -> IssuedHomeCode | None:
        """The home code issued under ``code_id`` (partner or stock conversion), read now, or
        None: what ``GetCodeStatus`` answers from, so that a revocation counts at once."""
        return await self._read("home_code", lambda c: conversions.home_code(c, code_id))

    async def put_conversions(self, records: Sequence[ConversionRecord]) -> None:
        """Insert ``records`` in one transaction; a (region, source_key) already stored is kept
        (the first conversion wins). Raises :class:`NotFoundError` (unknown region),
        :class:`AlreadyExistsError` (a converted code id used by another source)."""
        if records:
            await self._write(
                "put_conversions", lambda c: conversions.put(c, records), concurrent=True
            )

    async def claim_conversions(
        self, records: Sequence[ConversionRecord]
    ) -> list[ConversionRecord]:
        """Insert the records whose (region, source_key) is not stored yet and return the
        stored record for each, in order (an earlier conversion wins): one transaction, one hop
        per batch of new conversions. Raises :class:`AlreadyExistsError`."""
        if not records:
            return []
        return await self._write(
            "claim_conversions", lambda c: conversions.claim(c, records), concurrent=True
        )

    async def list_conversions(
        self, region: str | None = None, limit: int = 1000
    ) -> list[ConversionRecord]:
        """Conversion records (of ``region``, or all), oldest first, at most ``limit``.
        Raises ``ValueError`` if ``limit`` is not in 1..100000."""
        return await self._read("list_conversions", lambda c: conversions.listed(c, region, limit))

    # -- personal records --------------------------------------------------------------------

    async def open_stock_job(self, digest: str, source: str, now: datetime) -> StockJob:
        """The batch job of the file whose SHA-256 is ``digest`` (64 hex digits), created at
        row 0 if new. Raises ``ValueError``."""
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("a stock job is keyed by a SHA-256 hex digest")
        at = ts(now)
        return await self._write(
            "open_stock_job", lambda c: personal.open_stock_job(c, digest, source, at)
        )

    async def commit_stock_batch(self, batch: StockBatch) -> StockBatchResult:
        """Insert the batch's records whose (city, certificate_id) is new, add its counts to
        the job and move it to ``batch.last_row``, in one transaction. Raises
        :class:`ConcurrentChangeError` (nothing written) if the job is not at
        ``batch.after_row``, :class:`AlreadyExistsError` (a code id reused)."""
        return await self._write(
            "commit_stock_batch", lambda c: personal.commit_stock_batch(c, batch)
        )

    async def finish_stock_job(self, digest: str, now: datetime) -> StockJob:
        """Mark the job complete (kept: a complete file is not converted again)."""
        at = ts(now)
        return await self._write(
            "finish_stock_job", lambda c: personal.finish_stock_job(c, digest, at)
        )

    async def list_stock_jobs(self, limit: int = 1000) -> list[StockJob]:
        """Batch jobs, the most recently started first, at most ``limit``. Raises
        ``ValueError`` if ``limit`` is not in 1..100000."""
        return await self._read("list_stock_jobs", lambda c: stockoutput.list_jobs(c, limit))

    async def find_stock_job(self, prefix: str) -> StockJob:
        """The job whose SHA-256 starts with ``prefix`` (8 to 64 hex digits). Raises
        ``ValueError``, :class:`NotFoundError`."""
        return await self._read("find_stock_job", lambda c: stockoutput.find_job(c, prefix))

    async def stock_job_rows(
        self, digest: str, *, after_row: int = 0, limit: int = 10_000
    ) -> list[StockOutputRow]:
        """The output rows of job ``digest`` after ``after_row``, in row order, at most
        ``limit``. Raises ``ValueError`` for a ``limit`` out of 1..100000."""
        return await self._read(
            "stock_job_rows", lambda c: stockoutput.job_rows(c, digest, after_row, limit)
        )

    async def count_stock_conversions(self) -> int:
        """How many stock conversions are stored."""
        return await self._read("count_stock_conversions", personal.count_stock_conversions)

    async def append_recognitions(self, entries: Sequence[RecognitionEntry]) -> None:
        """Append ``entries`` (code ids already keyed: :meth:`RecognitionEntry.keyed`) to the
        recognition log in one transaction."""
        rows = personal.recognition_rows(entries)
        if rows:
            await self._write(
                "append_recognitions",
                lambda c: personal.append_recognitions(c, rows),
                concurrent=True,
            )

    async def list_recognitions(self, limit: int = 1000) -> list[RecognitionEntry]:
        """The recognition log, oldest first, at most ``limit`` (``code_id``: the stored code
        key). Raises ``ValueError``."""
        return await self._read("list_recognitions", lambda c: personal.list_recognitions(c, limit))

    # -- arrival declarations ---------------------------------------------------------------

    async def declare(self, record: DeclarationRecord, now: datetime) -> DeclareResult:
        """Store ``record`` as its holder's current declaration, superseding (revoking) the one
        before, in one transaction; a current declaration with the same digest and a code still
        valid at ``now`` is kept and returned instead (``duplicate``). A declaration made from a
        partner code already revoked is stored revoked. Raises :class:`AlreadyExistsError`."""
        return await self._write("declare", lambda c: declarations.declare(c, record, now))

    async def get_declaration(self, ident: str) -> DeclarationRecord | None:
        """The declaration with that id (its home code's id), or None."""
        return await self._read("get_declaration", lambda c: declarations.get(c, ident))

    async def count_declarations(
        self,
        by: Sequence[str] = (),
        *,
        since: date | None = None,
        until: date | None = None,
        superseded: bool = False,
    ) -> list[DeclarationCount]:
        """Declarations grouped by ``by`` (some of origin, day, colour; day: the arrival date),
        arrival dates from ``since`` to ``until`` inclusive, superseded ones only if asked.
        Raises ``ValueError`` for an unknown group."""
        groups = tuple(by)
        return await self._read(
            "count_declarations",
            lambda c: declarations.count(c, groups, since, until, superseded),
        )

    async def purge(
        self,
        *,
        recognitions_before: datetime | None,
        conversions_before: datetime | None,
        dry_run: bool = False,
    ) -> PurgeResult:
        """Delete what is older than the cut-offs, in one transaction: log entries decided
        before ``recognitions_before``; partner and stock conversions whose code expired before
        ``conversions_before``, except partner conversions revoked at or after it (counted in
        ``kept_revoked``), and arrival declarations likewise. Revocations, keys and the audit
        trail are never purged. With ``dry_run`` nothing is deleted."""
        return await self._write(
            "purge",
            lambda c: personal.purge(c, recognitions_before, conversions_before, dry_run),
        )
