""":class:`SQLiteStore`: every store role (:mod:`keys.store.protocols`) on one SQLite file.

Each method is one unit of work of an aggregate module (``regions``, ``trust``, ``audit``,
``trustlists``, ``conversions``, ``personal``), run whole in one transaction and one hop on the
store's thread (:class:`keys.store.sqlite.Database`). Several instances (or processes) may open
the same file (WAL mode): writers take SQLite's write lock with ``BEGIN IMMEDIATE`` and wait up
to a few seconds for each other.

The store is *not* on the per-request path: the hot path reads an in-memory
:class:`keys.registry.RegistrySnapshot`, rebuilt only when :meth:`registry_version` changes, and
writes conversions and the recognition log in batches (one hop per batch).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from keys.anchors import AnchorSet
from keys.audit import AuditEntry, AuditHead
from keys.model import ConversionRecord, Region, RegionKey
from keys.personal import (
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
    personal,
    regions,
    schema,
    stockoutput,
    trust,
    trustlists,
)
from keys.store.protocols import RegistryData
from keys.store.rows import DEFAULT_ACTOR, check_actor, ts
from keys.store.schema import CodeKeys
from keys.store.sqlite import Database
from keys.timeutil import utcnow

_R = TypeVar("_R")


class SQLiteStore:
    """Every store role on a local SQLite file (WAL mode, foreign keys on). Use :meth:`open`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def __repr__(self) -> str:
        return f"SQLiteStore({self._db.path!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        trace: Callable[[str], None] | None = None,
        code_keys: CodeKeys | None = None,
    ) -> SQLiteStore:
        """Open (creating if needed) the database at ``path`` and bring its schema up to date.

        ``":memory:"`` gives a private in-memory database (tests). ``trace``, if given, is
        called with the text of every SQL statement run (sqlite3's trace callback, values filled
        in): for debugging and for tests of what the store sends. ``code_keys`` (the gateway's
        :class:`keys.pseudonym.Pseudonymiser`) is needed only to upgrade a database of schema 3
        or older that holds code ids: the upgrade keys them. Raises
        :class:`StoreUnavailableError` if the file cannot be opened or is not a database, and
        :class:`ConfigurationError` if its schema is newer than this code knows, or needs
        ``code_keys`` to upgrade and has none.
        """
        db = Database(str(path), trace)
        try:
            await db.connect(lambda conn: schema.install_functions(conn, code_keys))
            await cls._migrate(db, code_keys)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    @staticmethod
    async def _migrate(db: Database, code_keys: CodeKeys | None) -> None:
        versions = await db.run(
            "migration", lambda c: schema.pending(c, db.path, code_keys), write=False
        )
        migrated = False
        for version in versions:

            def step(conn: sqlite3.Connection, version: int = version) -> bool:
                return schema.apply(conn, version, db.path, code_keys)

            migrated = await db.run("migration", step, write=True) or migrated
        if migrated and db.path != ":memory:":
            # Old pages (raw code ids before schema 4) must not survive in the WAL either.
            await db.run_plain(
                "checkpoint", lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            )

    async def close(self) -> None:
        """Close the connection. Idempotent; later calls raise :class:`StoreUnavailableError`."""
        await self._db.close()

    async def _read(self, what: str, fn: Callable[[sqlite3.Connection], _R]) -> _R:
        return await self._db.run(what, fn, write=False)

    async def _write(self, what: str, fn: Callable[[sqlite3.Connection], _R]) -> _R:
        return await self._db.run(what, fn, write=True)

    # -- health and registry -----------------------------------------------------------------

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` unless the database answers a read."""
        await self.registry_version()

    async def registry_version(self) -> int:
        """The registry's change counter."""
        return await self._read("registry_version", regions.version)

    async def read_registry(self) -> RegistryData:
        """Version, regions, keys, revocations and key-set versions from one read."""

        def read(conn: sqlite3.Connection) -> RegistryData:
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

    # -- conversions -------------------------------------------------------------------------

    async def get_conversion(self, region: str, source_key: str) -> ConversionRecord | None:
        """The record of a converted partner code (by its code key), or None."""
        return await self._read("get_conversion", lambda c: conversions.get(c, region, source_key))

    async def put_conversions(self, records: Sequence[ConversionRecord]) -> None:
        """Insert ``records`` in one transaction; a (region, source_key) already stored is kept
        (the first conversion wins). Raises :class:`NotFoundError` (unknown region),
        :class:`AlreadyExistsError` (a converted code id used by another source)."""
        if records:
            await self._write("put_conversions", lambda c: conversions.put(c, records))

    async def claim_conversions(
        self, records: Sequence[ConversionRecord]
    ) -> list[ConversionRecord]:
        """Insert the records whose (region, source_key) is not stored yet and return the
        stored record for each, in order (an earlier conversion wins): one transaction, one hop
        per batch of new conversions. Raises :class:`AlreadyExistsError`."""
        if not records:
            return []
        return await self._write("claim_conversions", lambda c: conversions.claim(c, records))

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

    async def count_stock_conversions(self) -> int:
        """How many stock conversions are stored."""
        return await self._read("count_stock_conversions", personal.count_stock_conversions)

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

    async def append_recognitions(self, entries: Sequence[RecognitionEntry]) -> None:
        """Append ``entries`` (code ids already keyed: :meth:`RecognitionEntry.keyed`) to the
        recognition log in one transaction."""
        rows = personal.recognition_rows(entries)
        if rows:
            await self._write(
                "append_recognitions", lambda c: personal.append_recognitions(c, rows)
            )

    async def list_recognitions(self, limit: int = 1000) -> list[RecognitionEntry]:
        """The recognition log, oldest first, at most ``limit`` (``code_id``: the stored code
        key). Raises ``ValueError``."""
        return await self._read("list_recognitions", lambda c: personal.list_recognitions(c, limit))

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
        ``kept_revoked``). Revocations, keys and the audit trail are never purged. With
        ``dry_run`` nothing is deleted."""
        return await self._write(
            "purge",
            lambda c: personal.purge(c, recognitions_before, conversions_before, dry_run),
        )
