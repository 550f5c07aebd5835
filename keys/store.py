"""Persistence of the key registry and of conversion records.

:class:`Store` is the swap point: only domain records (``Region``, ``RegionKey``,
``ConversionRecord``) cross it, never SQL, so that a shared database server (PostgreSQL) can
replace SQLite when several replicas run. :class:`SQLiteStore` implements it with aiosqlite.

The store is *not* on the per-request path: every ``await`` on aiosqlite costs about 100 µs of CPU
(see BASELINES.md). The hot path reads an in-memory :class:`keys.registry.RegistrySnapshot` that is
rebuilt only when :meth:`Store.registry_version` changes.

Conventions of this module:

* SQL text is built only from this module's constants (column lists); values are always bound
  parameters, hence the ``noqa: S608`` markers.

* Times are stored as integer unix seconds (UTC); sub-second parts are dropped on write.
* Every write is one transaction: it either happens completely or leaves nothing changed.
* Every database failure surfaces as :class:`StoreUnavailableError`; sqlite3 and aiosqlite
  exceptions never leak. Bad arguments raise ``ValueError``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosqlite

from keys import audit
from keys.anchors import AnchorSet
from keys.audit import AuditEntry, AuditEvent, AuditHead
from keys.crypto import Algorithm, PublicKey
from keys.errors import (
    AlreadyExistsError,
    AuditIntegrityError,
    BatchConflictError,
    ConcurrentChangeError,
    ConfigurationError,
    GatewayError,
    KeyIdReusedError,
    NotFoundError,
    RegistryError,
    StoreUnavailableError,
)
from keys.jsonutil import canonical_json
from keys.model import ConversionRecord, KeyStatus, Mode, Region, RegionKey
from keys.personal import (
    PurgeResult,
    RecognitionEntry,
    StockBatch,
    StockBatchResult,
    StockConversion,
    StockJob,
)
from keys.records import (
    CodeRevocation,
    HolderRevocation,
    InstallResult,
    KeySetChange,
    RegionTrust,
    RevocationBatchChange,
    SubmissionKind,
    SubmissionResult,
    TrustListVersion,
)
from keys.timeutil import from_unix, to_unix, utcnow

log = logging.getLogger("trustgw.keys")

MAX_LIST_LIMIT = 100_000
_BUSY_TIMEOUT_SECONDS = 5.0
DEFAULT_ACTOR = "operator:unknown"
_R = TypeVar("_R")
_T = TypeVar("_T")


class CodeKeys(Protocol):
    """What turns code ids into code keys (:class:`keys.pseudonym.Pseudonymiser`)."""

    def code_key(self, region: str, code_id: str) -> str:
        """The keyed form of a partner code id, the only one stored."""
        ...

    def from_code_hash(self, hashed: str) -> str:
        """The code key of a partner-supplied code hash; raises ``ValueError`` for another."""
        ...


@dataclass(frozen=True)
class RegistryData:
    """Everything the registry holds, read in one consistent transaction."""

    version: int
    regions: tuple[Region, ...]
    keys: tuple[RegionKey, ...]
    code_revocations: tuple[CodeRevocation, ...] = ()
    holder_revocations: tuple[HolderRevocation, ...] = ()
    keyset_versions: tuple[tuple[str, int], ...] = ()  # (region, current key-set version)


class Store(Protocol):
    """Where regions, their keys and conversion records live.

    Implementations raise :class:`StoreUnavailableError` when the database cannot be reached or
    fails, and leave nothing changed when a write fails.
    """

    async def close(self) -> None:
        """Release the connection. Idempotent."""
        ...

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` unless the database answers."""
        ...

    async def upsert_region(
        self, region: Region, *, actor: str = DEFAULT_ACTOR, now: datetime | None = None
    ) -> None:
        """Insert or replace a region (its keys are kept); audited as ``actor`` at ``now``."""
        ...

    async def list_regions(self) -> list[Region]:
        """All regions, ordered by code."""
        ...

    async def set_region_enabled(
        self, code: str, enabled: bool, *, actor: str = DEFAULT_ACTOR, now: datetime | None = None
    ) -> None:
        """Enable or disable a region; :class:`NotFoundError` if unknown."""
        ...

    async def add_key(
        self, key: RegionKey, *, actor: str = DEFAULT_ACTOR, now: datetime | None = None
    ) -> bool:
        """Insert a key; False when an identical key exists (idempotent retry).

        Raises :class:`AlreadyExistsError` if (region, kid) exists with other content and
        :class:`NotFoundError` if the region is unknown.
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
        """Revoke a key from ``at`` on; an earlier revocation time is kept.

        Raises :class:`NotFoundError` if the key is unknown.
        """
        ...

    async def list_keys(self, region: str | None = None) -> list[RegionKey]:
        """All keys, or one region's keys."""
        ...

    async def set_key_window(
        self, current: RegionKey, updated: RegionKey, *, actor: str, now: datetime
    ) -> RegionKey:
        """Give ``current`` the validity window of ``updated``; audited.

        Raises :class:`ConcurrentChangeError` unless the key is still stored as ``current``.
        """
        ...

    async def registry_version(self) -> int:
        """A counter that increases with every change to regions or keys."""
        ...

    async def read_registry(self) -> RegistryData:
        """Version, regions and keys in one consistent read."""
        ...

    async def get_conversion(self, region: str, source_key: str) -> ConversionRecord | None:
        """The conversion of a partner code (by its code key), or None."""
        ...

    async def claim_conversions(
        self, records: Sequence[ConversionRecord]
    ) -> list[ConversionRecord]:
        """Store the records whose source code has no conversion yet, in one transaction, and
        return the stored record for each (an earlier conversion wins)."""
        ...

    async def put_conversions(self, records: Sequence[ConversionRecord]) -> None:
        """Insert records in one transaction; existing (region, source_key) are kept."""
        ...

    async def list_conversions(
        self, region: str | None = None, limit: int = 1000
    ) -> list[ConversionRecord]:
        """Conversion records, oldest first, at most ``limit``."""
        ...

    # -- trust registry (anchors, key sets, revocations) ------------------------------------

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
        """Add a region with its anchors, or update it; identical content changes nothing.

        Raises :class:`AlreadyExistsError` if the region has other anchors and not ``replace``.
        """
        ...

    async def apply_keyset(self, change: KeySetChange) -> SubmissionResult:
        """Replace a region's keys (and anchors) atomically; a known digest returns the earlier
        result as a duplicate.

        Revocation times of kept or returning keys are preserved. Raises
        :class:`ConcurrentChangeError` if the version or anchors changed since they were read,
        :class:`KeyIdReusedError` if a key id names another key (now or before).
        """
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

        Raises :class:`NotFoundError` if the region never had that key.
        """
        ...

    async def apply_revocation_batch(self, change: RevocationBatchChange) -> SubmissionResult:
        """Record code and holder revocations and revoke matching conversion records.

        Raises :class:`BatchConflictError` if the batch id was used for another submission,
        :class:`NotFoundError` if the region is unknown.
        """
        ...

    async def list_revocations(
        self, region: str | None = None
    ) -> tuple[list[CodeRevocation], list[HolderRevocation]]:
        """Code and holder revocations (holders as pseudonyms)."""
        ...

    # -- audit --------------------------------------------------------------------------------

    async def read_audit(self, after_seq: int, limit: int) -> tuple[AuditHead, list[AuditEntry]]:
        """The audit head and up to ``limit`` entries with seq > ``after_seq``, in seq order."""
        ...

    # -- trust list versions ------------------------------------------------------------------

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

        Raises :class:`ConcurrentChangeError` if another version was recorded meanwhile.
        """
        ...

    # -- personal records: stock conversions, recognition log, retention --------------------

    async def open_stock_job(self, digest: str, source: str, now: datetime) -> StockJob:
        """The batch job of the file with SHA-256 ``digest``, created if new."""
        ...

    async def commit_stock_batch(self, batch: StockBatch) -> StockBatchResult:
        """Store a batch of stock conversions (an earlier conversion of the same certificate
        wins) and advance the job, in one transaction. Raises :class:`ConcurrentChangeError`
        if the job is no longer at ``batch.after_row``."""
        ...

    async def finish_stock_job(self, digest: str, now: datetime) -> StockJob:
        """Mark a batch job complete."""
        ...

    async def get_stock_conversion(self, city: str, certificate_id: str) -> StockConversion | None:
        """The conversion of a city's certificate, or None."""
        ...

    async def append_recognitions(self, entries: Sequence[RecognitionEntry]) -> None:
        """Append decided codes to the recognition log, in one transaction."""
        ...

    async def list_recognitions(self, limit: int = 1000) -> list[RecognitionEntry]:
        """The recognition log, oldest first (``code_id`` holds the stored code id hash)."""
        ...

    async def purge(
        self,
        *,
        recognitions_before: datetime | None,
        conversions_before: datetime | None,
        dry_run: bool = False,
    ) -> PurgeResult:
        """Delete recognition log entries decided before ``recognitions_before`` and conversions
        (partner and stock) that expired before ``conversions_before``; a partner conversion
        revoked at or after ``conversions_before`` is kept. None skips a kind."""
        ...


# --- schema ------------------------------------------------------------------------------------

# Each migration runs once, in its own transaction, and is recorded in schema_migrations.
# Append only: never edit a migration that has been released.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE registry_version (
                   id INTEGER PRIMARY KEY CHECK (id = 1),
                   version INTEGER NOT NULL
               )""",
            "INSERT INTO registry_version (id, version) VALUES (1, 0)",
            """CREATE TABLE regions (
                   code TEXT PRIMARY KEY CHECK (length(code) = 6),
                   name TEXT NOT NULL,
                   mode TEXT NOT NULL CHECK (mode IN ('show', 'convert')),
                   max_age_seconds INTEGER NOT NULL CHECK (max_age_seconds > 0),
                   enabled INTEGER NOT NULL CHECK (enabled IN (0, 1))
               )""",
            """CREATE TABLE region_keys (
                   region TEXT NOT NULL REFERENCES regions (code) ON DELETE RESTRICT,
                   kid TEXT NOT NULL,
                   alg TEXT NOT NULL,
                   spki BLOB NOT NULL,
                   not_before INTEGER NOT NULL,
                   not_after INTEGER NOT NULL,
                   status TEXT NOT NULL CHECK (status IN ('active', 'retired', 'revoked')),
                   revoked_at INTEGER,
                   PRIMARY KEY (region, kid)
               )""",
            """CREATE TABLE conversions (
                   region TEXT NOT NULL REFERENCES regions (code) ON DELETE RESTRICT,
                   source_code_id TEXT NOT NULL,
                   holder TEXT NOT NULL,
                   converted_code_id TEXT NOT NULL UNIQUE,
                   converted_code TEXT NOT NULL,
                   issued_at INTEGER NOT NULL,
                   expires_at INTEGER NOT NULL,
                   created_at INTEGER NOT NULL,
                   revoked_at INTEGER,
                   PRIMARY KEY (region, source_code_id)
               )""",
            "CREATE INDEX conversions_by_created ON conversions (created_at)",
        ),
    ),
    (
        2,
        (
            # Anchor sets of a region, one generation per installation or rotation.
            """CREATE TABLE anchor_sets (
                   region TEXT NOT NULL REFERENCES regions (code) ON DELETE RESTRICT,
                   generation INTEGER NOT NULL CHECK (generation >= 1),
                   threshold INTEGER NOT NULL CHECK (threshold >= 1),
                   anchors TEXT NOT NULL,
                   installed_at INTEGER NOT NULL,
                   source TEXT NOT NULL,
                   PRIMARY KEY (region, generation)
               )""",
            # Applied key sets, with the exact envelope bytes as received.
            """CREATE TABLE keysets (
                   region TEXT NOT NULL REFERENCES regions (code) ON DELETE RESTRICT,
                   version INTEGER NOT NULL CHECK (version >= 1),
                   expires INTEGER NOT NULL,
                   digest TEXT NOT NULL UNIQUE,
                   envelope BLOB NOT NULL,
                   applied_at INTEGER NOT NULL,
                   PRIMARY KEY (region, version)
               )""",
            # Keys dropped by a key set: kept so that a key id is never reused for another key
            # and a revocation survives the key's removal and return.
            """CREATE TABLE removed_keys (
                   region TEXT NOT NULL REFERENCES regions (code) ON DELETE RESTRICT,
                   kid TEXT NOT NULL,
                   alg TEXT NOT NULL,
                   spki BLOB NOT NULL,
                   not_before INTEGER NOT NULL,
                   not_after INTEGER NOT NULL,
                   revoked_at INTEGER,
                   removed_at INTEGER NOT NULL,
                   PRIMARY KEY (region, kid)
               )""",
            """CREATE TABLE code_revocations (
                   region TEXT NOT NULL REFERENCES regions (code) ON DELETE RESTRICT,
                   code_hash TEXT NOT NULL CHECK (length(code_hash) = 64),
                   effective_at INTEGER NOT NULL,
                   batch_id TEXT NOT NULL,
                   PRIMARY KEY (region, code_hash)
               )""",
            # Holders only as keyed pseudonyms, never as the partner's unkeyed hashes.
            """CREATE TABLE holder_revocations (
                   region TEXT NOT NULL REFERENCES regions (code) ON DELETE RESTRICT,
                   holder TEXT NOT NULL,
                   effective_at INTEGER NOT NULL,
                   batch_id TEXT NOT NULL,
                   PRIMARY KEY (region, holder, effective_at)
               )""",
            # Idempotency: one row per accepted submission, keyed by its statement's digest.
            """CREATE TABLE submissions (
                   digest TEXT PRIMARY KEY CHECK (length(digest) = 64),
                   region TEXT NOT NULL,
                   kind TEXT NOT NULL,
                   batch_id TEXT,
                   actor TEXT NOT NULL,
                   received_at INTEGER NOT NULL,
                   result TEXT NOT NULL,
                   UNIQUE (region, kind, batch_id)
               )""",
            """CREATE TABLE trustlist_versions (
                   version INTEGER PRIMARY KEY CHECK (version >= 1),
                   digest TEXT NOT NULL,
                   content BLOB NOT NULL,
                   created_at INTEGER NOT NULL
               )""",
            """CREATE TABLE audit_log (
                   seq INTEGER PRIMARY KEY,
                   at INTEGER NOT NULL,
                   actor TEXT NOT NULL,
                   action TEXT NOT NULL,
                   region TEXT NOT NULL,
                   before TEXT,
                   after TEXT,
                   prev_hash TEXT NOT NULL,
                   hash TEXT NOT NULL
               )""",
            """CREATE TABLE audit_head (
                   id INTEGER PRIMARY KEY CHECK (id = 1),
                   count INTEGER NOT NULL,
                   hash TEXT NOT NULL
               )""",
            "INSERT INTO audit_head (id, count, hash) VALUES (1, 0, '" + "0" * 64 + "')",
            "ALTER TABLE conversions ADD COLUMN source_hash TEXT",
            "UPDATE conversions SET source_hash = trustgw_sha256(region || '|' || source_code_id)",
            "CREATE INDEX conversions_by_source_hash ON conversions (region, source_hash)",
            "CREATE INDEX conversions_by_holder ON conversions (region, holder)",
        ),
    ),
    (
        3,
        (
            # Certificates issued by the home province's cities, converted by trustgw convert-batch.
            """CREATE TABLE stock_conversions (
                   city TEXT NOT NULL CHECK (length(city) = 6),
                   certificate_id TEXT NOT NULL,
                   holder TEXT NOT NULL,
                   code_id TEXT NOT NULL UNIQUE,
                   code TEXT NOT NULL,
                   colour TEXT NOT NULL CHECK (colour IN ('green', 'yellow', 'red')),
                   issued_at INTEGER NOT NULL,
                   expires_at INTEGER NOT NULL,
                   created_at INTEGER NOT NULL,
                   PRIMARY KEY (city, certificate_id)
               )""",
            "CREATE INDEX stock_conversions_by_expiry ON stock_conversions (expires_at)",
            # One row per input file (by SHA-256): where a batch conversion stands.
            """CREATE TABLE stock_jobs (
                   digest TEXT PRIMARY KEY CHECK (length(digest) = 64),
                   source TEXT NOT NULL,
                   committed_rows INTEGER NOT NULL CHECK (committed_rows >= 0),
                   counts TEXT NOT NULL,
                   started_at INTEGER NOT NULL,
                   updated_at INTEGER NOT NULL,
                   finished_at INTEGER
               )""",
            # Decided codes; holders as keyed pseudonyms, codes as sha256(region|code id).
            """CREATE TABLE recognitions (
                   at INTEGER NOT NULL,
                   region TEXT NOT NULL,
                   mode TEXT NOT NULL,
                   decision TEXT NOT NULL,
                   reason TEXT NOT NULL,
                   holder TEXT NOT NULL,
                   code_hash TEXT NOT NULL,
                   kid TEXT NOT NULL,
                   request_id TEXT NOT NULL
               )""",
            "CREATE INDEX recognitions_by_at ON recognitions (at)",
            "CREATE INDEX conversions_by_expiry ON conversions (expires_at)",
        ),
    ),
    (
        4,
        (
            # Code ids only as code keys (keys.pseudonym: HMAC under the gateway's secret): a
            # partner's code id may be the holder's ID number. Rewrites every stored row; the
            # raw ids and their unkeyed hashes are gone afterwards (secure_delete zeroes the
            # freed pages; the WAL is truncated after the migration).
            """CREATE TABLE conversions_v4 (
                   region TEXT NOT NULL REFERENCES regions (code) ON DELETE RESTRICT,
                   source_key TEXT NOT NULL,
                   holder TEXT NOT NULL,
                   converted_code_id TEXT NOT NULL UNIQUE,
                   converted_code TEXT NOT NULL,
                   issued_at INTEGER NOT NULL,
                   expires_at INTEGER NOT NULL,
                   created_at INTEGER NOT NULL,
                   revoked_at INTEGER,
                   PRIMARY KEY (region, source_key)
               )""",
            "INSERT INTO conversions_v4 SELECT region, trustgw_code_key(region, source_code_id),"
            " holder, converted_code_id, converted_code, issued_at, expires_at, created_at,"
            " revoked_at FROM conversions",
            "DROP TABLE conversions",
            "ALTER TABLE conversions_v4 RENAME TO conversions",
            "CREATE INDEX conversions_by_created ON conversions (created_at)",
            "CREATE INDEX conversions_by_expiry ON conversions (expires_at)",
            "CREATE INDEX conversions_by_holder ON conversions (region, holder)",
            """CREATE TABLE code_revocations_v4 (
                   region TEXT NOT NULL REFERENCES regions (code) ON DELETE RESTRICT,
                   code_key TEXT NOT NULL,
                   effective_at INTEGER NOT NULL,
                   batch_id TEXT NOT NULL,
                   PRIMARY KEY (region, code_key)
               )""",
            "INSERT INTO code_revocations_v4 SELECT region, trustgw_code_key_of(code_hash),"
            " effective_at, batch_id FROM code_revocations",
            "DROP TABLE code_revocations",
            "ALTER TABLE code_revocations_v4 RENAME TO code_revocations",
            "ALTER TABLE recognitions RENAME COLUMN code_hash TO code_key",
            "UPDATE recognitions SET code_key = trustgw_code_key_of(code_key) WHERE code_key != ''",
        ),
    ),
)
# Migrations that rewrite stored code ids need the gateway's secret (SQLiteStore.open(code_keys=)).
_KEYED_MIGRATIONS = frozenset({4})
# What migration 4 rewrites: if any of these has a row, it cannot run without the secret.
_ROWS_TO_KEY = (
    "SELECT 1 FROM conversions LIMIT 1",
    "SELECT 1 FROM code_revocations LIMIT 1",
    "SELECT 1 FROM recognitions WHERE code_hash != '' LIMIT 1",
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


# --- row mapping -------------------------------------------------------------------------------


def _ts(value: datetime) -> int:
    """Unix seconds of an argument; ``ValueError`` outside the range the store can read back."""
    seconds = to_unix(value)
    from_unix(seconds)  # range check (2000..2200), so that every stored time reads back
    return seconds


def _opt_ts(value: datetime | None) -> int | None:
    return None if value is None else _ts(value)


def _opt_time(value: int | None) -> datetime | None:
    return None if value is None else from_unix(value)


def _region_from_row(row: Any) -> Region:
    code, name, mode, max_age, enabled = row
    return Region(code, name, Mode(mode), timedelta(seconds=max_age), bool(enabled))


_KEY_COLUMNS = "region, kid, alg, spki, not_before, not_after, status, revoked_at"


def _key_from_row(row: Any) -> RegionKey:
    region, kid, alg, spki, not_before, not_after, status, revoked_at = row
    return RegionKey(
        region=region,
        kid=kid,
        public_key=PublicKey.from_spki(bytes(spki), Algorithm(alg)),
        not_before=from_unix(not_before),
        not_after=from_unix(not_after),
        status=KeyStatus(status),
        revoked_at=_opt_time(revoked_at),
    )


_CONVERSION_COLUMNS = (
    "region, source_key, holder, converted_code_id, converted_code, "
    "issued_at, expires_at, created_at, revoked_at"
)


def _conversion_from_row(row: Any) -> ConversionRecord:
    (region, source, holder, conv_id, conv_code, issued, expires, created, revoked) = row
    return ConversionRecord(
        region=region,
        source_key=source,
        holder=holder,
        converted_code_id=conv_id,
        converted_code=conv_code,
        issued_at=from_unix(issued),
        expires_at=from_unix(expires),
        created_at=from_unix(created),
        revoked_at=_opt_time(revoked),
    )


def _conversion_row(record: ConversionRecord) -> tuple[Any, ...]:
    return (
        record.region,
        record.source_key,
        record.holder,
        record.converted_code_id,
        record.converted_code,
        _ts(record.issued_at),
        _ts(record.expires_at),
        _ts(record.created_at),
        _opt_ts(record.revoked_at),
    )


def _sha256_text(text: str) -> str:
    return hashlib.sha256(str(text).encode("utf-8")).hexdigest()


def _json_text(value: Any) -> str:
    return canonical_json(value).decode("utf-8")


def _region_json(region: Region) -> dict[str, Any]:
    return {
        "code": region.code,
        "name": region.name,
        "mode": region.mode.value,
        "max_age": int(region.max_age.total_seconds()),
        "enabled": region.enabled,
    }


def _key_json(key: RegionKey) -> dict[str, Any]:
    return {
        "kid": key.kid,
        "alg": key.alg.value,
        "fingerprint": key.public_key.fingerprint(),
        "not_before": to_unix(key.not_before),
        "not_after": to_unix(key.not_after),
        "status": key.status.value,
        "revoked_at": None if key.revoked_at is None else to_unix(key.revoked_at),
    }


def _anchors_json(anchors: AnchorSet | None) -> dict[str, Any] | None:
    if anchors is None:
        return None
    return {
        "kids": sorted(anchors.kids),
        "threshold": anchors.threshold,
        "fingerprint": anchors.fingerprint(),
    }


_AUDIT_COLUMNS = "seq, at, actor, action, region, before, after, prev_hash, hash"


def _audit_from_row(row: Any) -> AuditEntry:
    seq, at, actor, action, region, before, after, prev_hash, hash_ = row
    return AuditEntry(
        seq=int(seq),
        at=from_unix(at),
        actor=str(actor),
        action=str(action),
        region=str(region),
        before=None if before is None else json.loads(before),
        after=None if after is None else json.loads(after),
        prev_hash=str(prev_hash),
        hash=str(hash_),
    )


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn database failures (and stored rows that no longer decode) into StoreUnavailableError.

    Registry and configuration errors raised on purpose pass through unchanged.
    """
    try:
        yield
    except (RegistryError, ConfigurationError):
        raise
    except GatewayError as exc:  # e.g. a stored public key that no longer loads
        raise StoreUnavailableError(f"registry database holds an unreadable row ({what})") from exc
    except sqlite3.Error as exc:
        raise StoreUnavailableError(f"registry database failed during {what}: {exc}") from exc
    except ValueError as exc:
        # aiosqlite raises ValueError on a closed connection; a stored row that fails validation
        # (unknown enum value, time out of range) lands here too. Arguments are checked earlier.
        raise StoreUnavailableError(f"registry database failed during {what}: {exc}") from exc


# The earliest revocation that applies to a conversion: of its source code (any time), or of its
# holder (a holder revocation applies to codes issued before it takes effect).
_REVOKE_NEW_CONVERSION = """
UPDATE conversions SET revoked_at = (
    SELECT MIN(t) FROM (
        SELECT effective_at AS t FROM code_revocations
         WHERE region = conversions.region AND code_key = conversions.source_key
        UNION ALL
        SELECT effective_at AS t FROM holder_revocations
         WHERE region = conversions.region AND holder = conversions.holder
           AND effective_at > conversions.issued_at
    )
)
WHERE region = :region AND source_key = :source AND revoked_at IS NULL
"""


def _claim(conn: sqlite3.Connection, records: Sequence[ConversionRecord]) -> list[ConversionRecord]:
    """claim_conversions' transaction body, on the writer thread's connection."""
    try:
        conn.executemany(
            f"INSERT INTO conversions ({_CONVERSION_COLUMNS})"  # noqa: S608
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (region, source_key) DO NOTHING",
            [_conversion_row(r) for r in records],
        )
    except sqlite3.IntegrityError as exc:
        raise AlreadyExistsError(
            f"a conversion could not be stored (unknown region or id reused): {exc}"
        ) from exc
    conn.executemany(
        _REVOKE_NEW_CONVERSION,
        [{"region": r.region, "source": r.source_key} for r in records],
    )
    stored = []
    for record in records:
        row = conn.execute(
            f"SELECT {_CONVERSION_COLUMNS} FROM conversions"  # noqa: S608
            " WHERE region = ? AND source_key = ?",
            (record.region, record.source_key),
        ).fetchone()
        stored.append(_conversion_from_row(row))
    return stored


# --- SQLite ------------------------------------------------------------------------------------


class SQLiteStore:
    """:class:`Store` on a local SQLite file (WAL mode, foreign keys on) through aiosqlite.

    One connection per instance; an ``asyncio.Lock`` serialises its transactions. Several
    instances (or processes) may open the same file: writers take SQLite's write lock with
    ``BEGIN IMMEDIATE`` and wait up to a few seconds for each other.
    """

    def __init__(
        self,
        conn: aiosqlite.Connection,
        path: str,
        trace: Callable[[str], None] | None = None,
        code_keys: CodeKeys | None = None,
    ) -> None:
        """Use :meth:`open`; this constructor takes an already prepared connection."""
        self._conn: aiosqlite.Connection | None = conn
        self._path = path
        self._trace = trace
        self._code_keys = code_keys
        self._lock = asyncio.Lock()
        self._writer: sqlite3.Connection | None = None  # claim_conversions' own connection
        self._writer_pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

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
        called with the text of every SQL statement run (as sqlite3's trace callback, with the
        values filled in): for debugging and for tests of what the store sends. ``code_keys``
        (the gateway's :class:`keys.pseudonym.Pseudonymiser`) is needed only to upgrade a
        database of schema 3 or older that holds code ids: the upgrade keys them. Raises
        :class:`StoreUnavailableError` if the file cannot be opened or is not a database, and
        :class:`ConfigurationError` if its schema is newer than this code knows, or needs
        ``code_keys`` to upgrade and has none.
        """
        target = str(path)
        try:
            conn = await aiosqlite.connect(
                target, isolation_level=None, timeout=_BUSY_TIMEOUT_SECONDS
            )
        except (sqlite3.Error, OSError, ValueError) as exc:
            raise StoreUnavailableError(f"cannot open registry database {target}: {exc}") from exc
        store = cls(conn, target, trace, code_keys)
        try:
            with _translated("open"):
                if trace is not None:
                    await conn.set_trace_callback(trace)
                await conn.execute("PRAGMA foreign_keys = ON")
                await conn.execute("PRAGMA journal_mode = WAL")
                await conn.execute("PRAGMA secure_delete = ON")  # deleted rows are zeroed
                await conn.create_function("trustgw_sha256", 1, _sha256_text, deterministic=True)
                key, key_of = _code_key_functions(code_keys)
                await conn.create_function("trustgw_code_key", 2, key, deterministic=True)
                await conn.create_function("trustgw_code_key_of", 1, key_of, deterministic=True)
                await store._migrate()
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        """Close the connection. Idempotent; later calls raise :class:`StoreUnavailableError`."""
        conn, self._conn = self._conn, None
        pool, self._writer_pool = self._writer_pool, None
        if pool is not None:
            writer, self._writer = self._writer, None
            if writer is not None:
                pool.submit(writer.close).result()
            pool.shutdown(wait=True)
        if conn is not None:
            try:
                await conn.close()
            except (sqlite3.Error, ValueError) as exc:  # nothing useful to do on close
                log.warning("closing registry database %s failed: %s", self._path, exc)

    async def _migrate(self) -> None:
        conn = self._require()
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
        )
        async with conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") as cur:
            row = await cur.fetchone()
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise ConfigurationError(
                f"registry database {self._path} has schema version {current}; this gateway "
                f"knows up to {SCHEMA_VERSION}: upgrade the gateway"
            )
        migrated = False
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            if version in _KEYED_MIGRATIONS and self._code_keys is None:
                await self._require_no_code_ids(version)
            async with self._write("migration") as tx:
                # Re-check inside the write lock: another process may have migrated meanwhile.
                async with tx.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
                ) as cur:
                    if await cur.fetchone() is not None:
                        continue
                for statement in statements:
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at)"
                    " VALUES (?, CAST(strftime('%s', 'now') AS INTEGER))",
                    (version,),
                )
            log.info("registry database %s migrated to schema version %s", self._path, version)
            migrated = True
        if migrated and self._path != ":memory:":
            # Old pages (raw code ids before schema 4) must not survive in the WAL either.
            await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def _require_no_code_ids(self, version: int) -> None:
        """Refuse to run a migration that keys code ids without the secret, if there are any."""
        conn = self._require()
        for query in _ROWS_TO_KEY:
            async with conn.execute(query) as cur:
                if await cur.fetchone() is not None:
                    raise ConfigurationError(
                        f"registry database {self._path} holds code ids that schema version "
                        f"{version} stores keyed: upgrade it with the gateway's key directory "
                        "(start trustgw serve once, with its passphrase)"
                    )

    def _require(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreUnavailableError(f"registry database {self._path} is closed")
        return self._conn

    def _write(self, what: str) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        """One write transaction: committed if the body finishes, rolled back otherwise."""
        return self._transaction(what, "BEGIN IMMEDIATE")

    def _read(self, what: str) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        """One read transaction (a consistent view of the database)."""
        return self._transaction(what, "BEGIN")

    @asynccontextmanager
    async def _transaction(self, what: str, begin: str) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            conn = self._require()
            with _translated(what):
                await conn.execute(begin)
            try:
                with _translated(what):
                    yield conn
                    await conn.execute("COMMIT")
            except BaseException:
                await self._rollback(conn)
                raise

    async def _rollback(self, conn: aiosqlite.Connection) -> None:
        try:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
        except (sqlite3.Error, ValueError) as exc:
            log.warning("rollback on registry database %s failed: %s", self._path, exc)

    @staticmethod
    async def _bump_version(conn: aiosqlite.Connection) -> None:
        await conn.execute("UPDATE registry_version SET version = version + 1 WHERE id = 1")

    @staticmethod
    async def _append_audit(conn: aiosqlite.Connection, event: AuditEvent) -> AuditEntry:
        """Chain ``event`` after the head, in the caller's transaction."""
        async with conn.execute("SELECT count, hash FROM audit_head WHERE id = 1") as cur:
            row = await cur.fetchone()
        if row is None:
            raise StoreUnavailableError("registry database has no audit head row")
        entry = audit.chain(event, AuditHead(int(row[0]), str(row[1])))
        await conn.execute(
            f"INSERT INTO audit_log ({_AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
            (
                entry.seq,
                to_unix(entry.at),
                entry.actor,
                entry.action,
                entry.region,
                None if entry.before is None else _json_text(entry.before),
                None if entry.after is None else _json_text(entry.after),
                entry.prev_hash,
                entry.hash,
            ),
        )
        await conn.execute(
            "UPDATE audit_head SET count = ?, hash = ? WHERE id = 1", (entry.seq, entry.hash)
        )
        return entry

    @staticmethod
    async def _region_exists(conn: aiosqlite.Connection, code: str) -> bool:
        async with conn.execute("SELECT 1 FROM regions WHERE code = ?", (code,)) as cur:
            return await cur.fetchone() is not None

    # -- health ------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` unless the database answers a read."""
        await self.registry_version()

    # -- regions -----------------------------------------------------------------------------

    async def upsert_region(
        self, region: Region, *, actor: str = DEFAULT_ACTOR, now: datetime | None = None
    ) -> None:
        """Insert ``region`` or replace the stored one with the same code; its keys are kept.

        The registry version increases, and the change is audited as ``actor`` at ``now``
        (default: the clock), only if something changed. Raises
        :class:`StoreUnavailableError`.
        """
        row = (
            region.code,
            region.name,
            region.mode.value,
            max(1, int(region.max_age.total_seconds())),
            int(region.enabled),
        )
        async with self._write("upsert_region") as tx:
            before = await self._region(tx, region.code)
            cur = await tx.execute(
                "INSERT INTO regions (code, name, mode, max_age_seconds, enabled)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (code) DO UPDATE SET name = excluded.name, mode = excluded.mode,"
                " max_age_seconds = excluded.max_age_seconds, enabled = excluded.enabled"
                " WHERE (name, mode, max_age_seconds, enabled) IS NOT"
                " (excluded.name, excluded.mode, excluded.max_age_seconds, excluded.enabled)",
                row,
            )
            if cur.rowcount > 0:
                await self._bump_version(tx)
                await self._append_audit(
                    tx,
                    AuditEvent(
                        actor,
                        "region.upsert",
                        now or utcnow(),
                        region.code,
                        None if before is None else _region_json(before),
                        _region_json(region),
                    ),
                )

    @classmethod
    async def _region(cls, conn: aiosqlite.Connection, code: str) -> Region | None:
        async with conn.execute(
            "SELECT code, name, mode, max_age_seconds, enabled FROM regions WHERE code = ?",
            (code,),
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else _region_from_row(row)

    async def list_regions(self) -> list[Region]:
        """All regions ordered by code. Raises :class:`StoreUnavailableError`."""
        async with self._read("list_regions") as tx:
            return await self._regions(tx)

    @staticmethod
    async def _regions(conn: aiosqlite.Connection) -> list[Region]:
        async with conn.execute(
            "SELECT code, name, mode, max_age_seconds, enabled FROM regions ORDER BY code"
        ) as cur:
            return [_region_from_row(row) for row in await cur.fetchall()]

    async def set_region_enabled(
        self, code: str, enabled: bool, *, actor: str = DEFAULT_ACTOR, now: datetime | None = None
    ) -> None:
        """Enable or disable recognition of a region (audited when it changes).

        Raises :class:`NotFoundError` if the region is unknown, :class:`StoreUnavailableError`.
        """
        async with self._write("set_region_enabled") as tx:
            if not await self._region_exists(tx, code):
                raise NotFoundError(f"region {code} is not registered", region=code)
            cur = await tx.execute(
                "UPDATE regions SET enabled = ? WHERE code = ? AND enabled != ?",
                (int(enabled), code, int(enabled)),
            )
            if cur.rowcount > 0:
                await self._bump_version(tx)
                await self._append_audit(
                    tx,
                    AuditEvent(
                        actor,
                        "region.enable" if enabled else "region.disable",
                        now or utcnow(),
                        code,
                        {"enabled": not enabled},
                        {"enabled": enabled},
                    ),
                )

    # -- keys --------------------------------------------------------------------------------

    async def add_key(
        self, key: RegionKey, *, actor: str = DEFAULT_ACTOR, now: datetime | None = None
    ) -> bool:
        """Insert a partner key; return False if the same key is already stored.

        "The same" means the same algorithm, key bytes and validity window (to the second), and a
        status that is either ACTIVE or equal to the stored one: a late retry of the original
        ``add`` after a revocation is a no-op, never an un-revocation. ``add_key`` never changes a
        stored key; use :meth:`revoke_key` for that.

        Raises :class:`NotFoundError` if the region is unknown, :class:`AlreadyExistsError` if
        (region, kid) is stored with other content, :class:`StoreUnavailableError`.
        """
        row = (
            key.region,
            key.kid,
            key.alg.value,
            key.public_key.spki,
            _ts(key.not_before),
            _ts(key.not_after),
            key.status.value,
            _opt_ts(key.revoked_at),
        )
        async with self._write("add_key") as tx:
            if not await self._region_exists(tx, key.region):
                raise NotFoundError(f"region {key.region} is not registered", region=key.region)
            async with tx.execute(
                f"SELECT {_KEY_COLUMNS} FROM region_keys WHERE region = ? AND kid = ?",  # noqa: S608
                (key.region, key.kid),
            ) as cur:
                existing = await cur.fetchone()
            if existing is not None:
                stored = tuple(existing)
                same_key = (stored[2], bytes(stored[3]), stored[4], stored[5]) == row[2:6]
                same_state = key.status is KeyStatus.ACTIVE or (stored[6], stored[7]) == row[6:8]
                if same_key and same_state:
                    return False
                raise AlreadyExistsError(
                    f"key {key.kid} of region {key.region} is already registered with other "
                    "content",
                    region=key.region,
                    kid=key.kid,
                )
            if await self._removed_key_conflicts(tx, key):
                raise KeyIdReusedError(
                    f"key id {key.kid} of region {key.region} named another key before",
                    region=key.region,
                    kid=key.kid,
                )
            await tx.execute(
                f"INSERT INTO region_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                row,
            )
            await self._bump_version(tx)
            await self._append_audit(
                tx, AuditEvent(actor, "key.add", now or utcnow(), key.region, None, _key_json(key))
            )
            return True

    @staticmethod
    async def _removed_key_conflicts(conn: aiosqlite.Connection, key: RegionKey) -> bool:
        async with conn.execute(
            "SELECT alg, spki FROM removed_keys WHERE region = ? AND kid = ?",
            (key.region, key.kid),
        ) as cur:
            row = await cur.fetchone()
        return row is not None and (row[0], bytes(row[1])) != (key.alg.value, key.public_key.spki)

    async def revoke_key(
        self,
        region: str,
        kid: str,
        at: datetime,
        *,
        actor: str = DEFAULT_ACTOR,
        now: datetime | None = None,
    ) -> RegionKey:
        """Mark a key REVOKED from ``at`` on and return it as stored.

        Revocation only moves earlier: if the key was already revoked at an earlier time, that
        time is kept. Raises :class:`NotFoundError` if the key is unknown,
        :class:`StoreUnavailableError`.
        """
        at_unix = _ts(at)
        async with self._write("revoke_key") as tx:
            before = await self._key(tx, region, kid)
            cur = await tx.execute(
                "UPDATE region_keys SET status = 'revoked',"
                " revoked_at = MIN(COALESCE(revoked_at, :at), :at)"
                " WHERE region = :region AND kid = :kid"
                " AND (status != 'revoked' OR revoked_at IS NULL OR revoked_at > :at)",
                {"at": at_unix, "region": region, "kid": kid},
            )
            changed = cur.rowcount > 0
            async with tx.execute(
                f"SELECT {_KEY_COLUMNS} FROM region_keys WHERE region = ? AND kid = ?",  # noqa: S608
                (region, kid),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                raise NotFoundError(f"region {region} has no key {kid}", region=region, kid=kid)
            key = _key_from_row(row)
            if changed:
                await self._bump_version(tx)
                await self._append_audit(
                    tx,
                    AuditEvent(
                        actor,
                        "key.revoke",
                        now or utcnow(),
                        region,
                        None if before is None else _key_json(before),
                        _key_json(key),
                    ),
                )
            return key

    async def set_key_window(
        self, current: RegionKey, updated: RegionKey, *, actor: str, now: datetime
    ) -> RegionKey:
        """Store ``updated``'s window for the key ``current`` (same region, kid and key bytes),
        as planned by :func:`keys.keywindow.plan_key_window`; audited as ``key.update``.

        Raises :class:`ConcurrentChangeError` (nothing written) unless the key is still stored
        exactly as ``current``, ``ValueError`` for another key or a bad actor,
        :class:`StoreUnavailableError`.
        """
        _check_actor(actor)
        same = (current.region, current.kid, current.alg, current.public_key.spki)
        if (updated.region, updated.kid, updated.alg, updated.public_key.spki) != same:
            raise ValueError("set_key_window changes only the window of one key")
        window = (_ts(updated.not_before), _ts(updated.not_after))
        async with self._write("set_key_window") as tx:
            stored = await self._key(tx, current.region, current.kid)
            if stored != current:
                raise ConcurrentChangeError(
                    f"key {current.kid} of region {current.region} changed meanwhile",
                    region=current.region,
                    kid=current.kid,
                )
            if window == (_ts(current.not_before), _ts(current.not_after)):
                return current
            await tx.execute(
                "UPDATE region_keys SET not_before = ?, not_after = ?"
                " WHERE region = ? AND kid = ?",
                (*window, current.region, current.kid),
            )
            after = await self._key(tx, current.region, current.kid)
            assert after is not None
            await self._bump_version(tx)
            await self._append_audit(
                tx,
                AuditEvent(
                    actor, "key.update", now, current.region, _key_json(current), _key_json(after)
                ),
            )
            return after

    @staticmethod
    async def _key(conn: aiosqlite.Connection, region: str, kid: str) -> RegionKey | None:
        async with conn.execute(
            f"SELECT {_KEY_COLUMNS} FROM region_keys WHERE region = ? AND kid = ?",  # noqa: S608
            (region, kid),
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else _key_from_row(row)

    async def list_keys(self, region: str | None = None) -> list[RegionKey]:
        """All keys (or ``region``'s), ordered by region, not_before, kid.

        Raises :class:`StoreUnavailableError`.
        """
        async with self._read("list_keys") as tx:
            return await self._keys(tx, region)

    @staticmethod
    async def _keys(conn: aiosqlite.Connection, region: str | None) -> list[RegionKey]:
        query = f"SELECT {_KEY_COLUMNS} FROM region_keys"  # noqa: S608
        params: tuple[str, ...] = ()
        if region is not None:
            query += " WHERE region = ?"
            params = (region,)
        async with conn.execute(query + " ORDER BY region, not_before, kid", params) as cur:
            return [_key_from_row(row) for row in await cur.fetchall()]

    async def registry_version(self) -> int:
        """The registry's change counter. Raises :class:`StoreUnavailableError`."""
        async with self._lock:
            conn = self._require()
            with _translated("registry_version"):
                async with conn.execute("SELECT version FROM registry_version WHERE id = 1") as cur:
                    row = await cur.fetchone()
        if row is None:
            raise StoreUnavailableError("registry database has no version row")
        return int(row[0])

    async def read_registry(self) -> RegistryData:
        """Version, regions, keys, revocations and key-set versions from one read transaction,
        so that they agree with each other.

        Raises :class:`StoreUnavailableError`.
        """
        async with self._read("read_registry") as tx:
            async with tx.execute("SELECT version FROM registry_version WHERE id = 1") as cur:
                row = await cur.fetchone()
            if row is None:
                raise StoreUnavailableError("registry database has no version row")
            regions = await self._regions(tx)
            keys = await self._keys(tx, None)
            codes, holders = await self._revocations(tx, None)
            async with tx.execute(
                "SELECT region, MAX(version) FROM keysets GROUP BY region ORDER BY region"
            ) as cur:
                versions = tuple((str(r[0]), int(r[1])) for r in await cur.fetchall())
        return RegistryData(
            int(row[0]), tuple(regions), tuple(keys), tuple(codes), tuple(holders), versions
        )

    # -- conversions -------------------------------------------------------------------------

    async def get_conversion(self, region: str, source_key: str) -> ConversionRecord | None:
        """The record of a converted partner code (by its code key), or None.

        Raises :class:`StoreUnavailableError`.
        """
        async with self._lock:
            conn = self._require()
            with _translated("get_conversion"):
                async with conn.execute(
                    f"SELECT {_CONVERSION_COLUMNS} FROM conversions"  # noqa: S608
                    " WHERE region = ? AND source_key = ?",
                    (region, source_key),
                ) as cur:
                    row = await cur.fetchone()
                return None if row is None else _conversion_from_row(row)

    async def put_conversions(self, records: Sequence[ConversionRecord]) -> None:
        """Insert ``records`` in one transaction; a (region, source_key) already stored is
        left as it is (the first conversion wins, so a retried batch is harmless).

        Raises :class:`NotFoundError` if a record's region is unknown, :class:`AlreadyExistsError`
        if a converted_code_id is already used by another source code (nothing is written then),
        :class:`StoreUnavailableError`.
        """
        rows = [_conversion_row(record) for record in records]
        if not rows:
            return
        async with self._write("put_conversions") as tx:
            for code in sorted({row[0] for row in rows}):
                if not await self._region_exists(tx, code):
                    raise NotFoundError(f"region {code} is not registered", region=code)
            try:
                await tx.executemany(
                    f"INSERT INTO conversions ({_CONVERSION_COLUMNS})"  # noqa: S608
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (region, source_key) DO NOTHING",
                    rows,
                )
                # A conversion made while a revocation was on its way is revoked with its source.
                await tx.executemany(
                    _REVOKE_NEW_CONVERSION,
                    [{"region": r.region, "source": r.source_key} for r in records],
                )
            except sqlite3.IntegrityError as exc:
                raise AlreadyExistsError(
                    f"a converted code id is already used by another conversion: {exc}"
                ) from exc

    async def claim_conversions(
        self, records: Sequence[ConversionRecord]
    ) -> list[ConversionRecord]:
        """Insert the records whose (region, source_key) is not stored yet and return the
        stored record for each, in order: an earlier conversion of the same source wins.

        One transaction, run in one hop on a dedicated writer thread with its own connection:
        the gateway calls this for every batch of new conversions, so it must be cheap (see
        BASELINES.md: an aiosqlite await costs about as much as a whole RPC). Raises
        :class:`AlreadyExistsError` if a converted code id is taken by another source code,
        :class:`StoreUnavailableError`.
        """
        if not records:
            return []
        self._require()
        if self._path == ":memory:":  # a second connection would see another database
            await self.put_conversions(records)
            stored = [await self.get_conversion(r.region, r.source_key) for r in records]
            return [s for s in stored if s is not None]
        return await self._on_writer("claim_conversions", lambda conn: _claim(conn, records))

    def _writer_executor(self) -> ThreadPoolExecutor:
        if self._writer_pool is None:
            self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="trustgw-writer")
        return self._writer_pool

    async def list_conversions(
        self, region: str | None = None, limit: int = 1000
    ) -> list[ConversionRecord]:
        """Conversion records (of ``region``, or all), oldest first, at most ``limit``.

        Raises ``ValueError`` if ``limit`` is not in 1..100000, :class:`StoreUnavailableError`.
        """
        if isinstance(limit, bool) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIST_LIMIT}")
        query = f"SELECT {_CONVERSION_COLUMNS} FROM conversions"  # noqa: S608
        params: tuple[Any, ...] = ()
        if region is not None:
            query += " WHERE region = ?"
            params = (region,)
        query += " ORDER BY created_at, region, source_key LIMIT ?"
        async with self._read("list_conversions") as tx:
            async with tx.execute(query, (*params, limit)) as cur:
                return [_conversion_from_row(row) for row in await cur.fetchall()]

    # -- trust registry ----------------------------------------------------------------------

    async def region_trust(self, region: str) -> RegionTrust:
        """A region with its anchors, key-set version and keys, from one read transaction.

        Raises :class:`StoreUnavailableError`.
        """
        async with self._read("region_trust") as tx:
            record = await self._region(tx, region)
            generation, anchors = await self._anchors(tx, region)
            version = await self._keyset_version(tx, region)
            keys = await self._keys(tx, region)
        return RegionTrust(record, anchors, generation, version, tuple(keys))

    async def all_anchors(self) -> dict[str, AnchorSet]:
        """Every region's current anchor set. Raises :class:`StoreUnavailableError`."""
        async with self._read("all_anchors") as tx:
            async with tx.execute(
                "SELECT a.region, a.anchors, a.threshold FROM anchor_sets a"
                " WHERE a.generation = (SELECT MAX(generation) FROM anchor_sets"
                " WHERE region = a.region) ORDER BY a.region"
            ) as cur:
                rows = await cur.fetchall()
            return {str(r[0]): _anchor_set(r[1], r[2]) for r in rows}

    @staticmethod
    async def _anchors(conn: aiosqlite.Connection, region: str) -> tuple[int, AnchorSet | None]:
        async with conn.execute(
            "SELECT generation, anchors, threshold FROM anchor_sets WHERE region = ?"
            " ORDER BY generation DESC LIMIT 1",
            (region,),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return 0, None
        return int(row[0]), _anchor_set(row[1], row[2])

    @staticmethod
    async def _keyset_version(conn: aiosqlite.Connection, region: str) -> int:
        async with conn.execute(
            "SELECT COALESCE(MAX(version), 0) FROM keysets WHERE region = ?", (region,)
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def find_submission(self, digest: str) -> SubmissionResult | None:
        """The stored result of an accepted submission, flagged as a duplicate, or None.

        Raises :class:`StoreUnavailableError`.
        """
        async with self._read("find_submission") as tx:
            return await self._submission(tx, digest)

    @staticmethod
    async def _submission(conn: aiosqlite.Connection, digest: str) -> SubmissionResult | None:
        async with conn.execute(
            "SELECT result FROM submissions WHERE digest = ?", (digest,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        try:
            return SubmissionResult.from_json(json.loads(row[0]), duplicate=True)
        except (KeyError, TypeError) as exc:
            raise StoreUnavailableError(f"submission {digest[:16]} is stored damaged") from exc

    @staticmethod
    async def _record_submission(
        conn: aiosqlite.Connection, result: SubmissionResult, actor: str
    ) -> None:
        await conn.execute(
            "INSERT INTO submissions (digest, region, kind, batch_id, actor, received_at, result)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                result.digest,
                result.region,
                result.kind.value,
                result.batch_id,
                actor,
                _ts(result.accepted_at),
                _json_text(result.to_json()),
            ),
        )

    async def install_partner(
        self, region: Region, anchors: AnchorSet, *, replace: bool, actor: str, now: datetime
    ) -> InstallResult:
        """Add a region with its anchors, or update its name, mode and maximum age.

        Anchors are installed when the region has none; different anchors replace the current
        ones only with ``replace`` (an operator's break-glass re-keying, audited). The region's
        enabled flag is kept. Identical content changes nothing (a duplicate).

        Raises :class:`AlreadyExistsError` (other anchors, no ``replace``),
        :class:`StoreUnavailableError`, ``ValueError`` for a bad actor.
        """
        _check_actor(actor)
        at = _ts(now)
        async with self._write("install_partner") as tx:
            before = await self._region(tx, region.code)
            generation, current = await self._anchors(tx, region.code)
            stored = region if before is None else replace_fields(region, enabled=before.enabled)
            region_changed = before is not None and before != stored
            anchors_changed = current is None or current.to_json() != anchors.to_json()
            if anchors_changed and current is not None and not replace:
                raise AlreadyExistsError(
                    f"region {region.code} already has other anchors: rotate them with a key set "
                    "signed by the old and the new anchors, or replace them explicitly",
                    region=region.code,
                )
            if before is None or region_changed:
                await tx.execute(
                    "INSERT INTO regions (code, name, mode, max_age_seconds, enabled)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (code) DO UPDATE SET"
                    " name = excluded.name, mode = excluded.mode,"
                    " max_age_seconds = excluded.max_age_seconds",
                    (
                        stored.code,
                        stored.name,
                        stored.mode.value,
                        max(1, int(stored.max_age.total_seconds())),
                        int(stored.enabled),
                    ),
                )
            if anchors_changed:
                generation += 1
                await tx.execute(
                    "INSERT INTO anchor_sets (region, generation, threshold, anchors,"
                    " installed_at, source) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        region.code,
                        generation,
                        anchors.threshold,
                        _json_text(anchors.to_json()),
                        at,
                        f"partner-file:{actor}",
                    ),
                )
            result = InstallResult(
                region.code,
                created=before is None,
                anchors_changed=anchors_changed,
                region_changed=region_changed,
                anchors_generation=generation,
                fingerprint=anchors.fingerprint(),
            )
            if not result.duplicate:
                await self._bump_version(tx)
                await self._append_audit(
                    tx,
                    AuditEvent(
                        actor,
                        "partner.install" if before is None else "partner.update",
                        now,
                        region.code,
                        None
                        if before is None
                        else {"region": _region_json(before), "anchors": _anchors_json(current)},
                        {"region": _region_json(stored), "anchors": _anchors_json(anchors)},
                    ),
                )
            return result

    async def apply_keyset(self, change: KeySetChange) -> SubmissionResult:
        """Make ``change.keys`` the region's complete key list, in one transaction.

        Keys absent from the new list are *removed* (kept aside in removed_keys: codes they
        signed stop verifying); keys listed are inserted or get the new validity window, keeping
        any revocation time they had (also from a previous removal). New anchors, if any, become
        the region's next anchor generation. A digest already applied returns its first result
        flagged as a duplicate.

        Raises :class:`ConcurrentChangeError` (version or anchors changed since they were
        read), :class:`KeyIdReusedError` (a key id names another key, now or before),
        :class:`NotFoundError` (unknown region), :class:`StoreUnavailableError`.
        """
        _check_actor(change.actor)
        at = _ts(change.at)
        async with self._write("apply_keyset") as tx:
            earlier = await self._submission(tx, change.digest)
            if earlier is not None:
                return earlier
            if not await self._region_exists(tx, change.region):
                raise NotFoundError(
                    f"region {change.region} is not registered", region=change.region
                )
            version = await self._keyset_version(tx, change.region)
            generation, anchors_before = await self._anchors(tx, change.region)
            if (version, generation) != (change.expected_version, change.expected_generation):
                raise ConcurrentChangeError(
                    f"region {change.region} changed while its key set was verified",
                    region=change.region,
                )
            old_keys = {k.kid: k for k in await self._keys(tx, change.region)}
            new_kids = {k.kid for k in change.keys}
            removed = sorted(set(old_keys) - new_kids)
            for kid in removed:
                await tx.execute(
                    "INSERT INTO removed_keys (region, kid, alg, spki, not_before, not_after,"
                    " revoked_at, removed_at) SELECT region, kid, alg, spki, not_before,"
                    " not_after, revoked_at, ? FROM region_keys WHERE region = ? AND kid = ?"
                    " ON CONFLICT (region, kid) DO UPDATE SET not_before = excluded.not_before,"
                    " not_after = excluded.not_after, revoked_at = excluded.revoked_at,"
                    " removed_at = excluded.removed_at",
                    (at, change.region, kid),
                )
                await tx.execute(
                    "DELETE FROM region_keys WHERE region = ? AND kid = ?", (change.region, kid)
                )
            for key in change.keys:
                await self._put_listed_key(tx, key, old_keys.get(key.kid))
            if change.anchors is not None:
                await tx.execute(
                    "INSERT INTO anchor_sets (region, generation, threshold, anchors,"
                    " installed_at, source) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        change.region,
                        generation + 1,
                        change.anchors.threshold,
                        _json_text(change.anchors.to_json()),
                        at,
                        f"keyset:{change.version}",
                    ),
                )
            await tx.execute(
                "INSERT INTO keysets (region, version, expires, digest, envelope, applied_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    change.region,
                    change.version,
                    _ts(change.expires),
                    change.digest,
                    change.envelope,
                    at,
                ),
            )
            new_keys = await self._keys(tx, change.region)
            result = SubmissionResult(
                SubmissionKind.KEYSET,
                change.region,
                change.digest,
                change.at,
                version=change.version,
                keys_added=tuple(sorted(new_kids - set(old_keys))),
                keys_removed=tuple(removed),
                keys_kept=tuple(sorted(new_kids & set(old_keys))),
                anchors_rotated=change.anchors is not None,
            )
            await self._record_submission(tx, result, change.actor)
            await self._bump_version(tx)
            await self._append_audit(
                tx,
                AuditEvent(
                    change.actor,
                    "keyset.apply",
                    change.at,
                    change.region,
                    {
                        "version": version,
                        "keys": [_key_json(k) for k in old_keys.values()],
                        "anchors": _anchors_json(anchors_before),
                    },
                    {
                        "version": change.version,
                        "digest": change.digest,
                        "expires": _ts(change.expires),
                        "keys": [_key_json(k) for k in new_keys],
                        "anchors": _anchors_json(change.anchors or anchors_before),
                    },
                ),
            )
            return result

    async def _put_listed_key(
        self, conn: aiosqlite.Connection, key: RegionKey, current: RegionKey | None
    ) -> None:
        """Insert or update one key of a new key set, keeping any earlier revocation."""
        same = (key.alg.value, key.public_key.spki)
        revoked_at: int | None = None
        if current is not None:
            if (current.alg.value, current.public_key.spki) != same:
                raise KeyIdReusedError(
                    f"key id {key.kid} of region {key.region} names another key",
                    region=key.region,
                    kid=key.kid,
                )
            revoked_at = _opt_ts(current.revoked_at)
        else:
            async with conn.execute(
                "SELECT alg, spki, revoked_at FROM removed_keys WHERE region = ? AND kid = ?",
                (key.region, key.kid),
            ) as cur:
                row = await cur.fetchone()
            if row is not None:
                if (row[0], bytes(row[1])) != same:
                    raise KeyIdReusedError(
                        f"key id {key.kid} of region {key.region} named another key before",
                        region=key.region,
                        kid=key.kid,
                    )
                revoked_at = None if row[2] is None else int(row[2])
                await conn.execute(
                    "DELETE FROM removed_keys WHERE region = ? AND kid = ?", (key.region, key.kid)
                )
        status = KeyStatus.REVOKED if revoked_at is not None else KeyStatus.ACTIVE
        await conn.execute(
            f"INSERT INTO region_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
            " ON CONFLICT (region, kid) DO UPDATE SET not_before = excluded.not_before,"
            " not_after = excluded.not_after, status = excluded.status,"
            " revoked_at = excluded.revoked_at",
            (
                key.region,
                key.kid,
                key.alg.value,
                key.public_key.spki,
                _ts(key.not_before),
                _ts(key.not_after),
                status.value,
                revoked_at,
            ),
        )

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
        """Revoke a key from ``compromised_at`` on; a revocation only ever moves earlier.

        A key removed by a key set is revoked too (should it ever return). A digest already
        applied returns its first result flagged as a duplicate. Raises :class:`NotFoundError`
        if the region never had the key, :class:`StoreUnavailableError`.
        """
        _check_actor(actor)
        at = _ts(compromised_at)
        async with self._write("apply_key_revocation") as tx:
            earlier = await self._submission(tx, digest)
            if earlier is not None:
                return earlier
            before = await self._key(tx, region, kid)
            if before is not None:
                await tx.execute(
                    "UPDATE region_keys SET status = 'revoked',"
                    " revoked_at = MIN(COALESCE(revoked_at, :at), :at)"
                    " WHERE region = :region AND kid = :kid",
                    {"at": at, "region": region, "kid": kid},
                )
                after = await self._key(tx, region, kid)
                assert after is not None
                revoked_at = after.revoked_at
                before_json: dict[str, Any] | None = _key_json(before)
                after_json: dict[str, Any] | None = _key_json(after)
            else:
                cur = await tx.execute(
                    "UPDATE removed_keys SET revoked_at = MIN(COALESCE(revoked_at, :at), :at)"
                    " WHERE region = :region AND kid = :kid",
                    {"at": at, "region": region, "kid": kid},
                )
                if cur.rowcount == 0:
                    raise NotFoundError(f"region {region} has no key {kid}", region=region, kid=kid)
                async with tx.execute(
                    "SELECT revoked_at FROM removed_keys WHERE region = ? AND kid = ?",
                    (region, kid),
                ) as rows:
                    row = await rows.fetchone()
                revoked_at = _opt_time(row[0] if row else None)
                before_json, after_json = (
                    {"kid": kid, "removed": True},
                    {
                        "kid": kid,
                        "removed": True,
                        "revoked_at": _opt_ts(revoked_at),
                    },
                )
            result = SubmissionResult(
                SubmissionKind.KEY_REVOCATION, region, digest, now, kid=kid, revoked_at=revoked_at
            )
            await self._record_submission(tx, result, actor)
            changed = before_json != after_json
            if changed:
                await self._bump_version(tx)
            await self._append_audit(
                tx, AuditEvent(actor, "key.revoke", now, region, before_json, after_json)
            )
            return result

    async def apply_revocation_batch(self, change: RevocationBatchChange) -> SubmissionResult:
        """Record a batch of code and holder revocations; revoke the matching conversions.

        A code revocation keeps the earliest effective time of all batches naming the code; a
        holder revocation is kept per effective time. Conversion records whose source code, or
        whose holder (for sources issued before the effective time), is revoked get that time
        as ``revoked_at`` (only ever earlier). A digest already applied returns its first
        result flagged as a duplicate.

        Raises :class:`BatchConflictError` if the batch id names another submission,
        :class:`NotFoundError` for an unknown region, :class:`StoreUnavailableError`.
        """
        _check_actor(change.actor)
        at = _ts(change.effective_at)
        async with self._write("apply_revocation_batch") as tx:
            earlier = await self._submission(tx, change.digest)
            if earlier is not None:
                return earlier
            if not await self._region_exists(tx, change.region):
                raise NotFoundError(
                    f"region {change.region} is not registered", region=change.region
                )
            async with tx.execute(
                "SELECT digest FROM submissions WHERE region = ? AND kind = ? AND batch_id = ?",
                (change.region, SubmissionKind.REVOCATIONS.value, change.batch_id),
            ) as cur:
                if await cur.fetchone() is not None:
                    raise BatchConflictError(
                        f"batch id {change.batch_id} of region {change.region} was already used "
                        "for a different batch",
                        region=change.region,
                        batch_id=change.batch_id,
                    )
            await tx.executemany(
                "INSERT INTO code_revocations (region, code_key, effective_at, batch_id)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (region, code_key) DO UPDATE SET"
                " effective_at = excluded.effective_at, batch_id = excluded.batch_id"
                " WHERE excluded.effective_at < code_revocations.effective_at",
                [(change.region, h, at, change.batch_id) for h in change.codes],
            )
            await tx.executemany(
                "INSERT INTO holder_revocations (region, holder, effective_at, batch_id)"
                " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(change.region, h, at, change.batch_id) for h in change.holders],
            )
            before = tx.total_changes
            await tx.executemany(
                "UPDATE conversions SET revoked_at = MIN(COALESCE(revoked_at, :at), :at)"
                " WHERE region = :region AND source_key = :key"
                " AND (revoked_at IS NULL OR revoked_at > :at)",
                [{"at": at, "region": change.region, "key": k} for k in change.codes],
            )
            await tx.executemany(
                "UPDATE conversions SET revoked_at = MIN(COALESCE(revoked_at, :at), :at)"
                " WHERE region = :region AND holder = :holder AND issued_at < :at"
                " AND (revoked_at IS NULL OR revoked_at > :at)",
                [{"at": at, "region": change.region, "holder": h} for h in change.holders],
            )
            conversions = tx.total_changes - before
            result = SubmissionResult(
                SubmissionKind.REVOCATIONS,
                change.region,
                change.digest,
                change.at,
                batch_id=change.batch_id,
                codes=len(change.codes),
                holders=len(change.holders),
                conversions_revoked=conversions,
            )
            await self._record_submission(tx, result, change.actor)
            await self._bump_version(tx)
            # Counts and the batch id only: no code or holder identifiers in the audit trail.
            await self._append_audit(
                tx,
                AuditEvent(
                    change.actor,
                    "revocations.apply",
                    change.at,
                    change.region,
                    None,
                    {
                        "batch_id": change.batch_id,
                        "digest": change.digest,
                        "effective_at": at,
                        "codes": len(change.codes),
                        "holders": len(change.holders),
                        "conversions_revoked": conversions,
                    },
                ),
            )
            return result

    async def list_revocations(
        self, region: str | None = None
    ) -> tuple[list[CodeRevocation], list[HolderRevocation]]:
        """Code and holder revocations (of ``region``, or all). Raises
        :class:`StoreUnavailableError`."""
        async with self._read("list_revocations") as tx:
            return await self._revocations(tx, region)

    @staticmethod
    async def _revocations(
        conn: aiosqlite.Connection, region: str | None
    ) -> tuple[list[CodeRevocation], list[HolderRevocation]]:
        where, params = ("", ()) if region is None else (" WHERE region = ?", (region,))
        async with conn.execute(
            "SELECT region, code_key, effective_at FROM code_revocations" + where,  # noqa: S608
            params,
        ) as cur:
            codes = [CodeRevocation(r[0], r[1], from_unix(r[2])) for r in await cur.fetchall()]
        async with conn.execute(
            "SELECT region, holder, effective_at FROM holder_revocations" + where,  # noqa: S608
            params,
        ) as cur:
            holders = [HolderRevocation(r[0], r[1], from_unix(r[2])) for r in await cur.fetchall()]
        return codes, holders

    # -- audit --------------------------------------------------------------------------------

    async def read_audit(self, after_seq: int, limit: int) -> tuple[AuditHead, list[AuditEntry]]:
        """The audit head and up to ``limit`` entries with seq > ``after_seq``, from one read.

        Raises ``ValueError`` for a bad ``limit``, :class:`StoreUnavailableError`.
        """
        if isinstance(limit, bool) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIST_LIMIT}")
        async with self._read("read_audit") as tx:
            async with tx.execute("SELECT count, hash FROM audit_head WHERE id = 1") as cur:
                row = await cur.fetchone()
            if row is None:
                raise StoreUnavailableError("registry database has no audit head row")
            async with tx.execute(
                f"SELECT {_AUDIT_COLUMNS} FROM audit_log WHERE seq > ?"  # noqa: S608
                " ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ) as cur:
                rows = await cur.fetchall()
        try:
            entries = [_audit_from_row(r) for r in rows]
        except (ValueError, TypeError) as exc:
            # An unreadable row is itself tampering; report it as such, with its position.
            raise AuditIntegrityError(f"an audit entry is unreadable: {exc}") from None
        return AuditHead(int(row[0]), str(row[1])), entries

    # -- trust list versions -----------------------------------------------------------------

    async def latest_trustlist(self) -> TrustListVersion | None:
        """The newest trust-list content version. Raises :class:`StoreUnavailableError`."""
        async with self._read("latest_trustlist") as tx:
            return await self._trustlist(tx, None)

    async def get_trustlist(self, version: int) -> TrustListVersion | None:
        """One trust-list content version. Raises :class:`StoreUnavailableError`."""
        async with self._read("get_trustlist") as tx:
            return await self._trustlist(tx, version)

    @staticmethod
    async def _trustlist(
        conn: aiosqlite.Connection, version: int | None
    ) -> TrustListVersion | None:
        query = "SELECT version, digest, content, created_at FROM trustlist_versions"
        if version is None:
            cur_ctx = conn.execute(query + " ORDER BY version DESC LIMIT 1")
        else:
            cur_ctx = conn.execute(query + " WHERE version = ?", (version,))
        async with cur_ctx as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        return TrustListVersion(int(row[0]), str(row[1]), bytes(row[2]), from_unix(row[3]))

    async def record_trustlist(
        self, digest: str, content: bytes, *, expected_latest: int, now: datetime
    ) -> TrustListVersion:
        """Record ``content`` as the next version, unless it already is the latest.

        Raises :class:`ConcurrentChangeError` if the latest version is not ``expected_latest``,
        :class:`StoreUnavailableError`.
        """
        at = _ts(now)
        async with self._write("record_trustlist") as tx:
            latest = await self._trustlist(tx, None)
            if latest is not None and latest.digest == digest:
                return latest
            current = 0 if latest is None else latest.version
            if current != expected_latest:
                raise ConcurrentChangeError("another trust list version was recorded meanwhile")
            await tx.execute(
                "INSERT INTO trustlist_versions (version, digest, content, created_at)"
                " VALUES (?, ?, ?, ?)",
                (current + 1, digest, content, at),
            )
            return TrustListVersion(current + 1, digest, content, from_unix(at))

    # -- personal records: stock conversions, recognition log, retention --------------------
    # Written on the writer thread (one hop per batch, like claim_conversions): the batch
    # conversion and the recognition log must not pay an aiosqlite await per row.

    async def _on_writer(self, what: str, fn: Callable[[sqlite3.Connection], _R]) -> _R:
        self._require()
        if self._path == ":memory:":  # a second connection would see another database
            raise StoreUnavailableError(f"{what} needs a database file, not :memory:")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer_executor(), self._writer_call, what, fn)

    def _writer_call(self, what: str, fn: Callable[[sqlite3.Connection], _R]) -> _R:
        with _translated(what):
            if self._writer is None:
                conn = sqlite3.connect(
                    self._path,
                    isolation_level=None,
                    timeout=_BUSY_TIMEOUT_SECONDS,
                    check_same_thread=False,
                )
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA secure_delete = ON")
                conn.create_function("trustgw_sha256", 1, _sha256_text, deterministic=True)
                conn.set_trace_callback(self._trace)
                self._writer = conn
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

    async def open_stock_job(self, digest: str, source: str, now: datetime) -> StockJob:
        """The batch job of the file whose SHA-256 is ``digest`` (64 hex digits), created at
        row 0 if new. Raises ``ValueError``, :class:`StoreUnavailableError`."""
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("a stock job is keyed by a SHA-256 hex digest")
        at = _ts(now)

        def run(conn: sqlite3.Connection) -> StockJob:
            conn.execute(
                "INSERT INTO stock_jobs (digest, source, committed_rows, counts, started_at,"
                " updated_at) VALUES (?, ?, 0, '{}', ?, ?) ON CONFLICT (digest) DO NOTHING",
                (digest, source[:200], at, at),
            )
            return _stock_job(conn, digest)

        return await self._on_writer("open_stock_job", run)

    async def commit_stock_batch(self, batch: StockBatch) -> StockBatchResult:
        """Insert the batch's records whose (city, certificate_id) is not stored yet, add its
        counts (``converted``, ``already_converted``, colours) to the job and move the job to
        ``batch.last_row``, in one transaction on the writer thread.

        Raises :class:`ConcurrentChangeError` (nothing written) if the job is not at
        ``batch.after_row``: another run of the same file moved it. :class:`StoreUnavailableError`.
        """
        rows = [_stock_row(r) for r in batch.records]
        at = _ts(batch.at)

        def run(conn: sqlite3.Connection) -> StockBatchResult:
            job = _stock_job(conn, batch.digest)
            if job.committed_rows != batch.after_row:
                raise ConcurrentChangeError(
                    f"batch job {batch.digest[:12]} is at row {job.committed_rows}, not at "
                    f"{batch.after_row}: is another conversion of this file running?"
                )
            counts = dict(job.counts)
            for name, value in batch.counts.items():
                counts[name] = counts.get(name, 0) + value
            # Few statements, not one per row: sqlite3 releases the GIL on every step, and
            # each re-acquisition waits for the busy main thread (see append_recognitions).
            seen = _stored_holders(conn, [(r.city, r.certificate_id) for r in batch.records])
            new: list[tuple[Any, ...]] = []
            conflicts: list[int] = []
            for record, row, number in zip(batch.records, rows, batch.rows, strict=True):
                key = (record.city, record.certificate_id)
                holder = seen.get(key)
                if holder is None:
                    seen[key] = record.holder
                    new.append(row)
                    counts["converted"] = counts.get("converted", 0) + 1
                    counts[record.colour] = counts.get(record.colour, 0) + 1
                    continue
                counts["already_converted"] = counts.get("already_converted", 0) + 1
                if holder != record.holder:
                    conflicts.append(number)
                    counts["holder_conflicts"] = counts.get("holder_conflicts", 0) + 1
            _insert_rows(conn, "stock_conversions", _STOCK_COLUMNS, new)
            conn.execute(
                "UPDATE stock_jobs SET committed_rows = ?, counts = ?, updated_at = ?"
                " WHERE digest = ?",
                (batch.last_row, _json_text(counts), at, batch.digest),
            )
            return StockBatchResult(counts, tuple(conflicts))

        try:
            return await self._on_writer("commit_stock_batch", run)
        except StoreUnavailableError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise AlreadyExistsError(
                    f"a stock conversion could not be stored (code id reused): {exc.__cause__}"
                ) from exc
            raise

    async def finish_stock_job(self, digest: str, now: datetime) -> StockJob:
        """Mark the job complete (kept: a complete file is not converted again)."""
        at = _ts(now)

        def run(conn: sqlite3.Connection) -> StockJob:
            conn.execute(
                "UPDATE stock_jobs SET finished_at = COALESCE(finished_at, ?), updated_at = ?"
                " WHERE digest = ?",
                (at, at, digest),
            )
            return _stock_job(conn, digest)

        return await self._on_writer("finish_stock_job", run)

    async def get_stock_conversion(self, city: str, certificate_id: str) -> StockConversion | None:
        """The conversion of a city's certificate, or None.

        Raises :class:`StoreUnavailableError`.
        """
        async with self._read("get_stock_conversion") as tx:
            async with tx.execute(
                f"SELECT {_STOCK_COLUMNS} FROM stock_conversions"  # noqa: S608
                " WHERE city = ? AND certificate_id = ?",
                (city, certificate_id),
            ) as cur:
                row = await cur.fetchone()
        return None if row is None else _stock_from_row(row)

    async def count_stock_conversions(self) -> int:
        """How many stock conversions are stored. Raises :class:`StoreUnavailableError`."""
        async with self._read("count_stock_conversions") as tx:
            async with tx.execute("SELECT COUNT(*) FROM stock_conversions") as cur:
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def append_recognitions(self, entries: Sequence[RecognitionEntry]) -> None:
        """Append ``entries`` to the recognition log in one transaction on the writer thread.

        ``code_id`` must already be a code key (:meth:`RecognitionEntry.keyed`): stored as
        given, cut to 64 characters. Raises :class:`StoreUnavailableError`.
        """
        rows = [
            (
                int(e.at.timestamp()),
                e.region[:16],
                e.mode[:16],
                e.decision[:16],
                e.reason[:64],
                e.holder[:64],
                e.code_id[:64],
                e.kid[:128],
                e.request_id[:128],
            )
            for e in entries
        ]
        if not rows:
            return

        def run(conn: sqlite3.Connection) -> None:
            # One statement per chunk of rows, not executemany: sqlite3 releases the GIL on
            # every step, and under load each re-acquisition waits for the event loop's
            # switch interval, which would keep the writer thread (and the conversions queued
            # behind it) busy for seconds.
            _insert_rows(conn, "recognitions", _RECOGNITION_COLUMNS, rows)

        await self._on_writer("append_recognitions", run)

    async def list_recognitions(self, limit: int = 1000) -> list[RecognitionEntry]:
        """The recognition log, oldest first, at most ``limit``; ``code_id`` holds the stored
        code key. Raises ``ValueError``, :class:`StoreUnavailableError`."""
        if isinstance(limit, bool) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIST_LIMIT}")
        async with self._read("list_recognitions") as tx:
            async with tx.execute(
                f"SELECT {_RECOGNITION_COLUMNS} FROM recognitions"  # noqa: S608
                " ORDER BY at, rowid LIMIT ?",
                (limit,),
            ) as cur:
                found = await cur.fetchall()
        return [
            RecognitionEntry(from_unix(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8])
            for r in found
        ]

    async def purge(
        self,
        *,
        recognitions_before: datetime | None,
        conversions_before: datetime | None,
        dry_run: bool = False,
    ) -> PurgeResult:
        """Delete what is older than the cut-offs, in one transaction on the writer thread.

        Recognition log entries decided before ``recognitions_before``; partner and stock
        conversions whose code expired before ``conversions_before``, except partner
        conversions revoked at or after it (kept while the revocation is recent, counted in
        ``kept_revoked``). Revocations, keys and the audit trail are never purged. With
        ``dry_run`` nothing is deleted. Raises :class:`StoreUnavailableError`.
        """
        rec_at = None if recognitions_before is None else _ts(recognitions_before)
        conv_at = None if conversions_before is None else _ts(conversions_before)

        def count(conn: sqlite3.Connection, sql: str, *args: Any) -> int:
            return int(conn.execute(sql, args).fetchone()[0])

        def run(conn: sqlite3.Connection) -> PurgeResult:
            recognitions = conversions = stock = kept = 0
            if rec_at is not None:
                where = " FROM recognitions WHERE at < ?"
                recognitions = count(conn, "SELECT COUNT(*)" + where, rec_at)
                if not dry_run and recognitions:
                    conn.execute("DELETE" + where, (rec_at,))
            if conv_at is not None:
                expired = " FROM conversions WHERE expires_at < ?"
                kept = count(
                    conn, "SELECT COUNT(*)" + expired + " AND revoked_at >= ?", conv_at, conv_at
                )
                where = expired + " AND (revoked_at IS NULL OR revoked_at < ?)"
                conversions = count(conn, "SELECT COUNT(*)" + where, conv_at, conv_at)
                if not dry_run and conversions:
                    conn.execute("DELETE" + where, (conv_at, conv_at))
                where = " FROM stock_conversions WHERE expires_at < ?"
                stock = count(conn, "SELECT COUNT(*)" + where, conv_at)
                if not dry_run and stock:
                    conn.execute("DELETE" + where, (conv_at,))
            cutoffs = {
                name: value
                for name, value in (
                    ("recognitions", recognitions_before),
                    ("conversions", conversions_before),
                )
                if value is not None
            }
            return PurgeResult(recognitions, conversions, stock, kept, dry_run, cutoffs)

        return await self._on_writer("purge", run)


_STOCK_COLUMNS = (
    "city, certificate_id, holder, code_id, code, colour, issued_at, expires_at, created_at"
)
_RECOGNITION_COLUMNS = "at, region, mode, decision, reason, holder, code_key, kid, request_id"
# Multi-row statements come in these sizes only: sqlite3 caches up to 128 prepared statements
# per connection, keyed by SQL text, so a text per batch length would fill the cache with
# statements used once (and keep their memory). A batch of n rows is cut greedily into chunks
# of these sizes: at most 4 + 4 + 4 + 4 + 4 statements per batch, 5 texts per statement kind.
BATCH_SHAPES = (500, 100, 20, 5, 1)  # 500 x 9 parameters, well below SQLite's 32766


def batch_shapes(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    """``items`` cut into consecutive chunks whose lengths are all in :data:`BATCH_SHAPES`."""
    start = 0
    for size in BATCH_SHAPES:
        while len(items) - start >= size:
            yield items[start : start + size]
            start += size


@functools.lru_cache(maxsize=64)
def _values_sql(template: str, width: int, rows: int) -> str:
    """``template`` with ``{values}`` replaced by ``rows`` groups of ``width`` placeholders."""
    group = "(" + ", ".join(["?"] * width) + ")"
    return template.format(values=", ".join([group] * rows))


def _insert_rows(
    conn: sqlite3.Connection, table: str, columns: str, rows: Sequence[tuple[Any, ...]]
) -> None:
    """INSERT ``rows`` into ``table`` with few statements of fixed shapes (see BATCH_SHAPES)."""
    width = columns.count(",") + 1
    for chunk in batch_shapes(rows):
        conn.execute(
            _values_sql(
                f"INSERT INTO {table} ({columns}) VALUES {{values}}",  # noqa: S608
                width,
                len(chunk),
            ),
            [value for row in chunk for value in row],
        )


def _stock_row(record: StockConversion) -> tuple[Any, ...]:
    return (
        record.city,
        record.certificate_id,
        record.holder,
        record.code_id,
        record.code,
        record.colour,
        _ts(record.issued_at),
        _ts(record.expires_at),
        _ts(record.created_at),
    )


def _stock_from_row(row: Any) -> StockConversion:
    city, cert, holder, code_id, code, colour, issued, expires, created = row
    return StockConversion(
        city, cert, holder, code_id, code, colour,
        from_unix(issued), from_unix(expires), from_unix(created),
    )  # fmt: skip


def _stored_holders(
    conn: sqlite3.Connection, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """The stored holder of each (city, certificate_id) already converted."""
    found: dict[tuple[str, str], str] = {}
    for chunk in batch_shapes(keys):
        rows = conn.execute(
            _values_sql(
                "SELECT city, certificate_id, holder FROM stock_conversions"
                " WHERE (city, certificate_id) IN (VALUES {values})",
                2,
                len(chunk),
            ),
            [value for key in chunk for value in key],
        ).fetchall()
        found.update(((str(city), str(cert)), str(holder)) for city, cert, holder in rows)
    return found


def _stock_job(conn: sqlite3.Connection, digest: str) -> StockJob:
    row = conn.execute(
        "SELECT digest, source, committed_rows, counts, started_at, updated_at, finished_at"
        " FROM stock_jobs WHERE digest = ?",
        (digest,),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no batch job {digest[:12]}")
    digest_, source, committed, counts, started, updated, finished = row
    return StockJob(
        digest_,
        source,
        int(committed),
        {str(k): int(v) for k, v in json.loads(counts).items()},
        from_unix(started),
        from_unix(updated),
        _opt_time(finished),
    )


def _anchor_set(text: str, threshold: int) -> AnchorSet:
    anchors = AnchorSet.from_json(json.loads(text))
    if anchors.threshold != threshold:
        raise StoreUnavailableError("an anchor set's threshold column disagrees with its JSON")
    return anchors


def _code_key_functions(
    code_keys: CodeKeys | None,
) -> tuple[Callable[[str, str], str], Callable[[str], str]]:
    """The SQL functions of migration 4: code id -> code key, code hash -> code key."""
    if code_keys is None:

        def missing(*_: str) -> str:
            raise ConfigurationError("keying stored code ids needs the gateway's secret")

        return missing, missing
    return code_keys.code_key, code_keys.from_code_hash


def _check_actor(actor: str) -> None:
    if audit.ACTOR_PATTERN.fullmatch(actor) is None:
        raise ValueError(f"actor {actor[:40]!r} is not '<kind>:<name>', e.g. 'operator:cli'")


def replace_fields(region: Region, *, enabled: bool) -> Region:
    """``region`` with another enabled flag."""
    return Region(region.code, region.name, region.mode, region.max_age, enabled)
