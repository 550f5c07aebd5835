"""The database schema: migrations, append-only, each run once in its own transaction.

Never edit a migration that has been released; add one. ``migrate`` runs on the store's thread
(:class:`keys.store.sqlite.Database`), re-checking inside each write transaction whether another
process applied the migration meanwhile.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Protocol

from keys.errors import ConfigurationError
from keys.store.rows import sha256_text

log = logging.getLogger("trustgw.keys")


class CodeKeys(Protocol):
    """What turns code ids into code keys (:class:`keys.pseudonym.Pseudonymiser`)."""

    def code_key(self, region: str, code_id: str) -> str:
        """The keyed form of a partner code id, the only one stored."""
        ...

    def from_code_hash(self, hashed: str) -> str:
        """The code key of a partner-supplied code hash; raises ``ValueError`` for another."""
        ...


# The venue and visit tables (migration 8 here, 5 on PostgreSQL: the same statements, in the
# types both accept). ``place_version`` counts venue changes, so that a serving gateway reloads
# its venues when another process added or disabled one.
PLACE_TABLES = (
    """CREATE TABLE venues (
           id TEXT PRIMARY KEY CHECK (length(id) = 18),
           name TEXT NOT NULL,
           division TEXT NOT NULL CHECK (length(division) = 6),
           category TEXT NOT NULL,
           address TEXT NOT NULL,
           enabled SMALLINT NOT NULL CHECK (enabled IN (0, 1)),
           code TEXT NOT NULL,
           kid TEXT NOT NULL,
           created_at BIGINT NOT NULL,
           disabled_at BIGINT
       )""",
    """CREATE TABLE place_version (
           id SMALLINT PRIMARY KEY CHECK (id = 1),
           version BIGINT NOT NULL
       )""",
    "INSERT INTO place_version (id, version) VALUES (1, 0)",
    # One row per scan of a place code with a holder's code: the holder's keyed pseudonym only.
    """CREATE TABLE visits (
           at BIGINT NOT NULL,
           venue TEXT NOT NULL,
           holder TEXT NOT NULL,
           decision TEXT NOT NULL,
           reason TEXT NOT NULL
       )""",
    "CREATE INDEX visits_by_holder ON visits (holder, at)",
    "CREATE INDEX visits_by_venue ON visits (venue, at)",
    "CREATE INDEX visits_by_time ON visits (at)",
)

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
    (
        5,
        (
            # What each row of a batch job produced, so that the job's output (certificate id,
            # home code, validity, status) can be written again later (trustgw stock export).
            # The code itself stays in stock_conversions; a row points at its certificate.
            # Rejected rows are not here (the error report has them): their certificate id may
            # be the personal value that got them rejected.
            """CREATE TABLE stock_job_rows (
                   digest TEXT NOT NULL REFERENCES stock_jobs (digest) ON DELETE CASCADE,
                   row INTEGER NOT NULL CHECK (row > 0),
                   city TEXT NOT NULL CHECK (length(city) = 6),
                   certificate_id TEXT NOT NULL,
                   outcome TEXT NOT NULL
                       CHECK (outcome IN ('converted', 'already_converted', 'holder_conflict')),
                   PRIMARY KEY (digest, row)
               )""",
            "CREATE INDEX stock_job_rows_by_certificate ON stock_job_rows (city, certificate_id)",
        ),
    ),
    (
        6,
        (
            # The gateway's own keys (keys.keyring): private keys sealed under a key derived
            # from each machine's passphrase, so that every replica reads the same keys.
            """CREATE TABLE gateway_keyring_meta (
                   id INTEGER PRIMARY KEY CHECK (id = 1),
                   generation INTEGER NOT NULL CHECK (generation >= 1),
                   kdf TEXT NOT NULL,
                   check_blob BLOB NOT NULL,
                   secret BLOB NOT NULL
               )""",
            """CREATE TABLE gateway_keyring (
                   role TEXT NOT NULL CHECK (role IN ('attest', 'issue', 'trustlist')),
                   kid TEXT NOT NULL,
                   alg TEXT NOT NULL,
                   spki BLOB NOT NULL,
                   not_before INTEGER NOT NULL,
                   not_after INTEGER NOT NULL,
                   status TEXT NOT NULL CHECK (status IN ('active', 'retired', 'revoked')),
                   revoked_at INTEGER,
                   sealed BLOB NOT NULL,
                   PRIMARY KEY (role, kid)
               )""",
        ),
    ),
    (
        7,
        (
            # Arrival declarations (keys/store/declarations.py): the decision and home code
            # only, the holder by pseudonym; what was declared is kept as a keyed digest.
            """CREATE TABLE declarations (
                   id TEXT PRIMARY KEY,
                   holder TEXT NOT NULL,
                   digest TEXT NOT NULL,
                   origin TEXT NOT NULL,
                   origin_kind TEXT NOT NULL CHECK (origin_kind IN ('province', 'abroad')),
                   arrival_date TEXT NOT NULL CHECK (length(arrival_date) = 10),
                   colour TEXT NOT NULL CHECK (colour IN ('green', 'yellow', 'red')),
                   rules TEXT NOT NULL,
                   green_from TEXT,
                   exempt INTEGER NOT NULL CHECK (exempt IN (0, 1)),
                   code TEXT NOT NULL,
                   issued_at INTEGER NOT NULL,
                   expires_at INTEGER NOT NULL,
                   created_at INTEGER NOT NULL,
                   partner_region TEXT NOT NULL,
                   partner_source_key TEXT NOT NULL,
                   partner_holder TEXT NOT NULL,
                   partner_issued_at INTEGER,
                   revoked_at INTEGER,
                   revoked_reason TEXT NOT NULL
                       CHECK (revoked_reason IN ('', 'superseded', 'partner_revoked')),
                   superseded_by TEXT NOT NULL
               )""",
            # One current declaration per holder: a new one supersedes it in one transaction.
            "CREATE UNIQUE INDEX declarations_current ON declarations (holder)"
            " WHERE revoked_at IS NULL",
            "CREATE INDEX declarations_by_partner_code ON declarations"
            " (partner_region, partner_source_key)",
            "CREATE INDEX declarations_by_partner_holder ON declarations"
            " (partner_region, partner_holder)",
            "CREATE INDEX declarations_by_expiry ON declarations (expires_at)",
            "CREATE INDEX declarations_by_arrival ON declarations (arrival_date, origin)",
        ),
    ),
    (
        8,
        (
            # Venues and their visits (keys/store/places.py, docs/operations.md "Venues and
            # place codes"), and the gateway keyring's new role "place" (the key that signs
            # place codes): SQLite cannot widen a CHECK, so the keyring table is rebuilt.
            """CREATE TABLE gateway_keyring_v8 (
                   role TEXT NOT NULL CHECK (role IN ('attest', 'issue', 'trustlist', 'place')),
                   kid TEXT NOT NULL,
                   alg TEXT NOT NULL,
                   spki BLOB NOT NULL,
                   not_before INTEGER NOT NULL,
                   not_after INTEGER NOT NULL,
                   status TEXT NOT NULL CHECK (status IN ('active', 'retired', 'revoked')),
                   revoked_at INTEGER,
                   sealed BLOB NOT NULL,
                   PRIMARY KEY (role, kid)
               )""",
            "INSERT INTO gateway_keyring_v8 SELECT role, kid, alg, spki, not_before, not_after,"
            " status, revoked_at, sealed FROM gateway_keyring",
            "DROP TABLE gateway_keyring",
            "ALTER TABLE gateway_keyring_v8 RENAME TO gateway_keyring",
            *PLACE_TABLES,
        ),
    ),
    (
        9,
        (
            # A revocation batch's rows by batch id: a gateway reads the batches applied since
            # the audit position it holds (keys.store.trust.stream_revocations), not every
            # revocation on every change.
            "CREATE INDEX code_revocations_by_batch ON code_revocations (region, batch_id)",
            "CREATE INDEX holder_revocations_by_batch ON holder_revocations (region, batch_id)",
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


def install_functions(conn: sqlite3.Connection, code_keys: CodeKeys | None) -> None:
    """The SQL functions the migrations call (on every connection: a migration may be pending)."""
    conn.create_function("trustgw_sha256", 1, sha256_text, deterministic=True)
    key, key_of = _code_key_functions(code_keys)
    conn.create_function("trustgw_code_key", 2, key, deterministic=True)
    conn.create_function("trustgw_code_key_of", 1, key_of, deterministic=True)


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version the database is at (0 when new)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
    )
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def pending(conn: sqlite3.Connection, path: str, code_keys: CodeKeys | None) -> list[int]:
    """The versions still to apply, in order. Raises :class:`ConfigurationError` for a schema
    newer than this code, or a keyed migration with code ids to key and no ``code_keys``."""
    current = current_version(conn)
    if current > SCHEMA_VERSION:
        raise ConfigurationError(
            f"registry database {path} has schema version {current}; this gateway "
            f"knows up to {SCHEMA_VERSION}: upgrade the gateway"
        )
    versions = [version for version, _ in MIGRATIONS if version > current]
    return versions


def apply(conn: sqlite3.Connection, version: int, path: str, code_keys: CodeKeys | None) -> bool:
    """Apply one migration in the caller's write transaction; False if already applied."""
    if conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone():
        return False
    if version in _KEYED_MIGRATIONS and code_keys is None:
        for query in _ROWS_TO_KEY:
            if conn.execute(query).fetchone() is not None:
                raise ConfigurationError(
                    f"registry database {path} holds code ids that schema version "
                    f"{version} stores keyed: upgrade it with the gateway's key directory "
                    "(trustgw db migrate, with its passphrase)"
                )
    for statement in dict(MIGRATIONS)[version]:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO schema_migrations (version, applied_at)"
        " VALUES (?, CAST(strftime('%s', 'now') AS INTEGER))",
        (version,),
    )
    log.info("registry database %s migrated to schema version %s", path, version)
    return True


def _code_key_functions(
    code_keys: CodeKeys | None,
) -> tuple[Callable[[str, str], str], Callable[[str], str]]:
    """The SQL functions of migration 4: code id -> code key, code hash -> code key."""
    if code_keys is None:

        def missing(*_: str) -> str:
            raise ConfigurationError("keying stored code ids needs the gateway's secret")

        return missing, missing
    return code_keys.code_key, code_keys.from_code_hash
