"""The PostgreSQL schema: its own versioned migrations, applied under an advisory lock.

PostgreSQL's migrations are not SQLite's: migration 1 is the whole SQLite schema 1-4 as it
stands (keyed code ids from the start, so nothing to re-key), in PostgreSQL's types (``BIGINT``
unix seconds, ``BYTEA`` key and envelope bytes, ``SMALLINT`` flags), with the same table and
column names, so that every aggregate's SQL runs unchanged on both backends. Append only: never
edit a migration that has been released; add one.

**Applying.** :func:`migrate` runs every pending migration in one transaction (PostgreSQL's DDL
is transactional: a failed migration leaves nothing behind) under ``pg_advisory_xact_lock``
(:data:`keys.store.pgdb.MIGRATION_LOCK`): two replicas starting at once do not race, the second
waits and then finds nothing to do.

**Rolling upgrades: which code may run on which schema.** Each migration records
``readable_by``, the oldest code schema version that still works on the database once it is
applied. Code that knows up to version ``v`` opens a database at version ``d``:

- ``d == v``: it runs;
- ``d < v``: it migrates (``trustgw init`` / ``trustgw db migrate``), or refuses to serve with
  :class:`keys.errors.SchemaOutdatedError` when asked not to migrate (``trustgw serve``);
- ``d > v``: it runs if every applied migration's ``readable_by`` is at most ``v`` (an
  *expanding* migration: new tables, new nullable columns, new indexes, which old code does not
  see), else it is refused at open with a :class:`keys.errors.ConfigurationError` naming both
  versions (a *contracting* migration: a column dropped or renamed, a meaning changed).

So a release that must change the schema incompatibly does it in two: first an expanding
migration that new code uses and old code ignores (``readable_by`` = the previous version);
every replica is upgraded one at a time while both run; a later release contracts
(``readable_by`` = its own version) once no old replica is left.

**Notifications.** Every change of the registry's version (every region, key, anchor, key-set
and revocation change bumps it) and every new trust-list version sends
``pg_notify('trustgw_registry', payload)`` from a trigger, delivered when its transaction
commits: the payload is the new registry version (decimal text) or ``trustlist:<version>``.
Other replicas listen (:data:`REGISTRY_CHANNEL`) and refresh at once instead of polling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg

from keys.errors import ConfigurationError
from keys.store.pgdb import MIGRATION_LOCK
from keys.store.schema import PLACE_TABLES

log = logging.getLogger("trustgw.keys")

#: The channel of registry and trust-list change notifications (payloads: module docstring).
REGISTRY_CHANNEL = "trustgw_registry"


@dataclass(frozen=True)
class Migration:
    """One schema version: its statements and the oldest code version that can run on it."""

    version: int
    readable_by: int
    statements: tuple[str, ...]


_NOTIFY = f"""
CREATE FUNCTION trustgw_notify_registry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'trustlist_versions' THEN
        PERFORM pg_notify('{REGISTRY_CHANNEL}', 'trustlist:' || NEW.version::text);
    ELSIF NEW.version IS DISTINCT FROM OLD.version THEN
        PERFORM pg_notify('{REGISTRY_CHANNEL}', NEW.version::text);
    END IF;
    RETURN NULL;
END
$$
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        1,
        (
            """CREATE TABLE registry_version (
                   id SMALLINT PRIMARY KEY CHECK (id = 1),
                   version BIGINT NOT NULL
               )""",
            "INSERT INTO registry_version (id, version) VALUES (1, 0)",
            """CREATE TABLE regions (
                   code TEXT PRIMARY KEY CHECK (length(code) = 6),
                   name TEXT NOT NULL,
                   mode TEXT NOT NULL CHECK (mode IN ('show', 'convert')),
                   max_age_seconds BIGINT NOT NULL CHECK (max_age_seconds > 0),
                   enabled SMALLINT NOT NULL CHECK (enabled IN (0, 1))
               )""",
            """CREATE TABLE region_keys (
                   region TEXT NOT NULL REFERENCES regions (code) ON DELETE RESTRICT,
                   kid TEXT NOT NULL,
                   alg TEXT NOT NULL,
                   spki BYTEA NOT NULL,
                   not_before BIGINT NOT NULL,
                   not_after BIGINT NOT NULL,
                   status TEXT NOT NULL CHECK (status IN ('active', 'retired', 'revoked')),
                   revoked_at BIGINT,
                   PRIMARY KEY (region, kid)
               )""",
            # Code ids only as code keys (keys.pseudonym): a partner's code id may be the
            # holder's ID number.
            """CREATE TABLE conversions (
                   region TEXT NOT NULL REFERENCES regions (code) ON DELETE RESTRICT,
                   source_key TEXT NOT NULL,
                   holder TEXT NOT NULL,
                   converted_code_id TEXT NOT NULL UNIQUE,
                   converted_code TEXT NOT NULL,
                   issued_at BIGINT NOT NULL,
                   expires_at BIGINT NOT NULL,
                   created_at BIGINT NOT NULL,
                   revoked_at BIGINT,
                   PRIMARY KEY (region, source_key)
               )""",
            "CREATE INDEX conversions_by_created ON conversions (created_at)",
            "CREATE INDEX conversions_by_expiry ON conversions (expires_at)",
            "CREATE INDEX conversions_by_holder ON conversions (region, holder)",
            """CREATE TABLE anchor_sets (
                   region TEXT NOT NULL REFERENCES regions (code) ON DELETE RESTRICT,
                   generation BIGINT NOT NULL CHECK (generation >= 1),
                   threshold BIGINT NOT NULL CHECK (threshold >= 1),
                   anchors TEXT NOT NULL,
                   installed_at BIGINT NOT NULL,
                   source TEXT NOT NULL,
                   PRIMARY KEY (region, generation)
               )""",
            """CREATE TABLE keysets (
                   region TEXT NOT NULL REFERENCES regions (code) ON DELETE RESTRICT,
                   version BIGINT NOT NULL CHECK (version >= 1),
                   expires BIGINT NOT NULL,
                   digest TEXT NOT NULL UNIQUE,
                   envelope BYTEA NOT NULL,
                   applied_at BIGINT NOT NULL,
                   PRIMARY KEY (region, version)
               )""",
            """CREATE TABLE removed_keys (
                   region TEXT NOT NULL REFERENCES regions (code) ON DELETE RESTRICT,
                   kid TEXT NOT NULL,
                   alg TEXT NOT NULL,
                   spki BYTEA NOT NULL,
                   not_before BIGINT NOT NULL,
                   not_after BIGINT NOT NULL,
                   revoked_at BIGINT,
                   removed_at BIGINT NOT NULL,
                   PRIMARY KEY (region, kid)
               )""",
            """CREATE TABLE code_revocations (
                   region TEXT NOT NULL REFERENCES regions (code) ON DELETE RESTRICT,
                   code_key TEXT NOT NULL,
                   effective_at BIGINT NOT NULL,
                   batch_id TEXT NOT NULL,
                   PRIMARY KEY (region, code_key)
               )""",
            """CREATE TABLE holder_revocations (
                   region TEXT NOT NULL REFERENCES regions (code) ON DELETE RESTRICT,
                   holder TEXT NOT NULL,
                   effective_at BIGINT NOT NULL,
                   batch_id TEXT NOT NULL,
                   PRIMARY KEY (region, holder, effective_at)
               )""",
            """CREATE TABLE submissions (
                   digest TEXT PRIMARY KEY CHECK (length(digest) = 64),
                   region TEXT NOT NULL,
                   kind TEXT NOT NULL,
                   batch_id TEXT,
                   actor TEXT NOT NULL,
                   received_at BIGINT NOT NULL,
                   result TEXT NOT NULL,
                   UNIQUE (region, kind, batch_id)
               )""",
            # Versions are allocated under the store's exclusive write lock; the key makes two
            # lists under one version impossible even so.
            """CREATE TABLE trustlist_versions (
                   version BIGINT PRIMARY KEY CHECK (version >= 1),
                   digest TEXT NOT NULL,
                   content BYTEA NOT NULL,
                   created_at BIGINT NOT NULL
               )""",
            # One linear chain: appended under the exclusive write lock, and no two entries may
            # follow the same one (a fork is refused by the database itself).
            """CREATE TABLE audit_log (
                   seq BIGINT PRIMARY KEY,
                   at BIGINT NOT NULL,
                   actor TEXT NOT NULL,
                   action TEXT NOT NULL,
                   region TEXT NOT NULL,
                   before TEXT,
                   after TEXT,
                   prev_hash TEXT NOT NULL UNIQUE,
                   hash TEXT NOT NULL
               )""",
            """CREATE TABLE audit_head (
                   id SMALLINT PRIMARY KEY CHECK (id = 1),
                   count BIGINT NOT NULL,
                   hash TEXT NOT NULL
               )""",
            "INSERT INTO audit_head (id, count, hash) VALUES (1, 0, '" + "0" * 64 + "')",
            """CREATE TABLE stock_conversions (
                   city TEXT NOT NULL CHECK (length(city) = 6),
                   certificate_id TEXT NOT NULL,
                   holder TEXT NOT NULL,
                   code_id TEXT NOT NULL UNIQUE,
                   code TEXT NOT NULL,
                   colour TEXT NOT NULL CHECK (colour IN ('green', 'yellow', 'red')),
                   issued_at BIGINT NOT NULL,
                   expires_at BIGINT NOT NULL,
                   created_at BIGINT NOT NULL,
                   PRIMARY KEY (city, certificate_id)
               )""",
            "CREATE INDEX stock_conversions_by_expiry ON stock_conversions (expires_at)",
            """CREATE TABLE stock_jobs (
                   digest TEXT PRIMARY KEY CHECK (length(digest) = 64),
                   source TEXT NOT NULL,
                   committed_rows BIGINT NOT NULL CHECK (committed_rows >= 0),
                   counts TEXT NOT NULL,
                   started_at BIGINT NOT NULL,
                   updated_at BIGINT NOT NULL,
                   finished_at BIGINT
               )""",
            # ``rowid`` is SQLite's implicit row number, made explicit: the log's order of
            # insertion, which both backends' SQL sorts by.
            """CREATE TABLE recognitions (
                   rowid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                   at BIGINT NOT NULL,
                   region TEXT NOT NULL,
                   mode TEXT NOT NULL,
                   decision TEXT NOT NULL,
                   reason TEXT NOT NULL,
                   holder TEXT NOT NULL,
                   code_key TEXT NOT NULL,
                   kid TEXT NOT NULL,
                   request_id TEXT NOT NULL
               )""",
            "CREATE INDEX recognitions_by_at ON recognitions (at)",
            _NOTIFY,
            "CREATE TRIGGER registry_version_notify AFTER UPDATE ON registry_version"
            " FOR EACH ROW EXECUTE FUNCTION trustgw_notify_registry()",
            "CREATE TRIGGER trustlist_versions_notify AFTER INSERT ON trustlist_versions"
            " FOR EACH ROW EXECUTE FUNCTION trustgw_notify_registry()",
        ),
    ),
    # The gateway's own keys, sealed (keys.keyring, keys/store/keyring.py): expanding (new
    # tables only), so code of schema 1 runs beside it during a rolling upgrade.
    Migration(
        2,
        1,
        (
            """CREATE TABLE gateway_keyring_meta (
                   id SMALLINT PRIMARY KEY CHECK (id = 1),
                   generation BIGINT NOT NULL CHECK (generation >= 1),
                   kdf TEXT NOT NULL,
                   check_blob BYTEA NOT NULL,
                   secret BYTEA NOT NULL
               )""",
            """CREATE TABLE gateway_keyring (
                   role TEXT NOT NULL CHECK (role IN ('attest', 'issue', 'trustlist')),
                   kid TEXT NOT NULL,
                   alg TEXT NOT NULL,
                   spki BYTEA NOT NULL,
                   not_before BIGINT NOT NULL,
                   not_after BIGINT NOT NULL,
                   status TEXT NOT NULL CHECK (status IN ('active', 'retired', 'revoked')),
                   revoked_at BIGINT,
                   sealed BYTEA NOT NULL,
                   PRIMARY KEY (role, kid)
               )""",
        ),
    ),
    # What each row of a batch job produced (keys/store/stockoutput.py; SQLite migration 5):
    # expanding (a new table), so older code runs beside it; rows it converts have no output.
    Migration(
        3,
        1,
        (
            """CREATE TABLE stock_job_rows (
                   digest TEXT NOT NULL REFERENCES stock_jobs (digest) ON DELETE CASCADE,
                   row BIGINT NOT NULL CHECK (row > 0),
                   city TEXT NOT NULL CHECK (length(city) = 6),
                   certificate_id TEXT NOT NULL,
                   outcome TEXT NOT NULL
                       CHECK (outcome IN ('converted', 'already_converted', 'holder_conflict')),
                   PRIMARY KEY (digest, row)
               )""",
            "CREATE INDEX stock_job_rows_by_certificate ON stock_job_rows (city, certificate_id)",
        ),
    ),
    # Arrival declarations (keys/store/declarations.py; SQLite migration 7): expanding (a new
    # table), so older code runs beside it.
    Migration(
        4,
        1,
        (
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
                   issued_at BIGINT NOT NULL,
                   expires_at BIGINT NOT NULL,
                   created_at BIGINT NOT NULL,
                   partner_region TEXT NOT NULL,
                   partner_source_key TEXT NOT NULL,
                   partner_holder TEXT NOT NULL,
                   partner_issued_at BIGINT,
                   revoked_at BIGINT,
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
    # Venues and visits (keys/store/places.py; SQLite migration 8) and the keyring's "place"
    # role. Contracting (readable_by 5): code that does not know the place role cannot read a
    # keyring that holds a place key.
    Migration(
        5,
        5,
        (
            "ALTER TABLE gateway_keyring DROP CONSTRAINT gateway_keyring_role_check",
            "ALTER TABLE gateway_keyring ADD CONSTRAINT gateway_keyring_role_check"
            " CHECK (role IN ('attest', 'issue', 'trustlist', 'place'))",
            *PLACE_TABLES,
        ),
    ),
    # A revocation batch's rows by batch id (SQLite migration 9), so that a gateway reads only
    # the batches applied since the audit position it holds: expanding (indexes only).
    Migration(
        6,
        1,
        (
            "CREATE INDEX code_revocations_by_batch ON code_revocations (region, batch_id)",
            "CREATE INDEX holder_revocations_by_batch ON holder_revocations (region, batch_id)",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version

_CREATE_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version BIGINT PRIMARY KEY, readable_by BIGINT NOT NULL, applied_at BIGINT NOT NULL)"
)


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema stands: its version and the oldest code that may run on it."""

    version: int
    readable_by: int


def state(conn: psycopg.Connection[Any]) -> SchemaState:
    """The database's schema version and ``readable_by`` (0, 0 when new); reads only."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return SchemaState(0, 0)
    row = conn.execute(
        "SELECT COALESCE(MAX(version), 0), COALESCE(MAX(readable_by), 0) FROM schema_migrations"
    ).fetchone()
    assert row is not None  # an aggregate always gives a row
    return SchemaState(int(row[0]), int(row[1]))


def check_readable(found: SchemaState, where: str) -> None:
    """Raise :class:`ConfigurationError` unless this code may run on a schema at ``found``."""
    if found.version > SCHEMA_VERSION and found.readable_by > SCHEMA_VERSION:
        raise ConfigurationError(
            f"registry database {where} has schema version {found.version}, which needs a "
            f"gateway that knows version {found.readable_by} or later; this one knows up to "
            f"{SCHEMA_VERSION}: upgrade the gateway"
        )


def migrate(conn: psycopg.Connection[Any], where: str) -> list[int]:
    """Apply every pending migration in one transaction under the migration lock; the versions
    applied (none when up to date or newer but readable). ``conn`` is in autocommit mode.
    Raises :class:`ConfigurationError` for a schema this code cannot run on."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(_CREATE_MIGRATIONS)
        found = state(conn)
        check_readable(found, where)
        applied = []
        for migration in MIGRATIONS:
            if migration.version <= found.version:
                continue
            for statement in migration.statements:
                conn.execute(statement.encode("utf-8"))  # verbatim: no placeholders
            conn.execute(
                "INSERT INTO schema_migrations (version, readable_by, applied_at)"
                " VALUES (%s, %s, CAST(EXTRACT(EPOCH FROM now()) AS BIGINT))",
                (migration.version, migration.readable_by),
            )
            applied.append(migration.version)
            log.info("registry database %s migrated to schema version %s", where, migration.version)
    return applied
