"""The trust-submission aggregate's SQL: anchors, key sets, submissions, code and holder
revocations. The rules of each change are plans (:mod:`keys.trustplans`); this module reads
the state a plan needs and writes what the plan says, in the caller's transaction."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

from keys.anchors import AnchorSet
from keys.audit import AuditEvent, key_json
from keys.errors import BatchConflictError, NotFoundError
from keys.model import Region
from keys.records import (
    CodeRevocation,
    HolderRevocation,
    InstallResult,
    KeySetChange,
    RegionTrust,
    RevocationBatchChange,
    SubmissionKind,
    SubmissionResult,
)
from keys.store import audit, declarations, regions
from keys.store.dbapi import Connection, Cursor
from keys.store.protocols import RevocationSink
from keys.store.rows import (
    EARLIER_AT,
    KEY_COLUMNS,
    check_actor,
    json_text,
    key_row,
    opt_time,
    opt_ts,
    region_row,
    ts,
)
from keys.timeutil import from_unix
from keys.trustplans import (
    RemovedKey,
    StoredConversion,
    conversions_to_revoke,
    plan_install,
    plan_keyset,
    revocation_audit,
    revocation_result,
)


def _anchor_set(text: str, threshold: int) -> AnchorSet:
    anchors = AnchorSet.from_json(json.loads(text))
    if anchors.threshold != threshold:
        raise ValueError("an anchor set's threshold column disagrees with its JSON")
    return anchors


def anchors(conn: Connection, code: str) -> tuple[int, AnchorSet | None]:
    """A region's current anchor generation and anchors (0, None without any)."""
    row = conn.execute(
        "SELECT generation, anchors, threshold FROM anchor_sets WHERE region = ?"
        " ORDER BY generation DESC LIMIT 1",
        (code,),
    ).fetchone()
    if row is None:
        return 0, None
    return int(row[0]), _anchor_set(row[1], row[2])


def all_anchors(conn: Connection) -> dict[str, AnchorSet]:
    """Every region's current anchors."""
    rows = conn.execute(
        "SELECT a.region, a.anchors, a.threshold FROM anchor_sets a"
        " WHERE a.generation = (SELECT MAX(generation) FROM anchor_sets"
        " WHERE region = a.region) ORDER BY a.region"
    ).fetchall()
    return {str(r[0]): _anchor_set(r[1], r[2]) for r in rows}


def _insert_anchors(
    conn: Connection, code: str, generation: int, new: AnchorSet, at: int, source: str
) -> None:
    conn.execute(
        "INSERT INTO anchor_sets (region, generation, threshold, anchors, installed_at, source)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (code, generation, new.threshold, json_text(new.to_json()), at, source),
    )


def keyset_version(conn: Connection, code: str) -> int:
    """A region's current key-set version (0: none yet)."""
    row = conn.execute(
        "SELECT COALESCE(MAX(version), 0) FROM keysets WHERE region = ?", (code,)
    ).fetchone()
    return int(row[0]) if row else 0


def region_trust(conn: Connection, code: str) -> RegionTrust:
    """A region, its anchors, key-set version and keys."""
    record = regions.region(conn, code)
    generation, current = anchors(conn, code)
    version = keyset_version(conn, code)
    keys = regions.keys(conn, code)
    return RegionTrust(record, current, generation, version, tuple(keys))


def submission(conn: Connection, digest: str) -> SubmissionResult | None:
    """The stored result of a submission, flagged duplicate, or None."""
    row = conn.execute("SELECT result FROM submissions WHERE digest = ?", (digest,)).fetchone()
    if row is None:
        return None
    return SubmissionResult.from_json(json.loads(row[0]), duplicate=True)


def _record_submission(conn: Connection, result: SubmissionResult, actor: str) -> None:
    conn.execute(
        "INSERT INTO submissions (digest, region, kind, batch_id, actor, received_at, result)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            result.digest,
            result.region,
            result.kind.value,
            result.batch_id,
            actor,
            ts(result.accepted_at),
            json_text(result.to_json()),
        ),
    )


def install_partner(
    conn: Connection,
    new: Region,
    new_anchors: AnchorSet,
    replace: bool,
    actor: str,
    now: datetime,
) -> InstallResult:
    """Install a partner file as :func:`keys.trustplans.plan_install` plans it."""
    check_actor(actor)
    at = ts(now)
    generation, current = anchors(conn, new.code)
    plan = plan_install(
        new,
        new_anchors,
        before=regions.region(conn, new.code),
        current=current,
        generation=generation,
        replace=replace,
        actor=actor,
        now=now,
    )
    if plan.region is not None:
        conn.execute(
            "INSERT INTO regions (code, name, mode, max_age_seconds, enabled)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (code) DO UPDATE SET"
            " name = excluded.name, mode = excluded.mode,"
            " max_age_seconds = excluded.max_age_seconds",
            region_row(plan.region),
        )
    if plan.anchors is not None:
        _insert_anchors(
            conn, new.code, plan.result.anchors_generation, plan.anchors, at,
            f"partner-file:{actor}",
        )  # fmt: skip
    if plan.audit is not None:
        regions.bump_version(conn)
        audit.append(conn, plan.audit)
    return plan.result


def _removed(conn: Connection, code: str) -> dict[str, RemovedKey]:
    rows = conn.execute(
        "SELECT kid, alg, spki, revoked_at FROM removed_keys WHERE region = ?", (code,)
    ).fetchall()
    return {str(r[0]): RemovedKey(str(r[0]), str(r[1]), bytes(r[2]), opt_time(r[3])) for r in rows}


def apply_keyset(conn: Connection, change: KeySetChange) -> SubmissionResult:
    """Apply a key set as :func:`keys.trustplans.plan_keyset` plans it."""
    check_actor(change.actor)
    at = ts(change.at)
    earlier = submission(conn, change.digest)
    if earlier is not None:
        return earlier
    regions.require_region(conn, change.region)
    generation, anchors_before = anchors(conn, change.region)
    plan = plan_keyset(
        change,
        version=keyset_version(conn, change.region),
        generation=generation,
        anchors_before=anchors_before,
        current=regions.keys(conn, change.region),
        removed=_removed(conn, change.region),
    )
    for kid in plan.remove:
        conn.execute(
            "INSERT INTO removed_keys (region, kid, alg, spki, not_before, not_after,"
            " revoked_at, removed_at) SELECT region, kid, alg, spki, not_before,"
            " not_after, revoked_at, ? FROM region_keys WHERE region = ? AND kid = ?"
            " ON CONFLICT (region, kid) DO UPDATE SET not_before = excluded.not_before,"
            " not_after = excluded.not_after, revoked_at = excluded.revoked_at,"
            " removed_at = excluded.removed_at",
            (at, change.region, kid),
        )
        conn.execute("DELETE FROM region_keys WHERE region = ? AND kid = ?", (change.region, kid))
    for kid in plan.restore:
        conn.execute("DELETE FROM removed_keys WHERE region = ? AND kid = ?", (change.region, kid))
    conn.executemany(
        f"INSERT INTO region_keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
        " ON CONFLICT (region, kid) DO UPDATE SET not_before = excluded.not_before,"
        " not_after = excluded.not_after, status = excluded.status,"
        " revoked_at = excluded.revoked_at",
        [key_row(k) for k in plan.put],
    )
    if plan.anchors is not None:
        _insert_anchors(
            conn, change.region, generation + 1, plan.anchors, at, f"keyset:{change.version}"
        )
    conn.execute(
        "INSERT INTO keysets (region, version, expires, digest, envelope, applied_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (change.region, change.version, ts(change.expires), change.digest, change.envelope, at),
    )
    _record_submission(conn, plan.result, change.actor)
    regions.bump_version(conn)
    audit.append(conn, plan.audit)
    return plan.result


def apply_key_revocation(
    conn: Connection,
    code: str,
    kid: str,
    compromised_at: datetime,
    digest: str,
    actor: str,
    now: datetime,
) -> SubmissionResult:
    """Revoke a current or removed key from its compromise time on."""
    check_actor(actor)
    at = ts(compromised_at)
    earlier = submission(conn, digest)
    if earlier is not None:
        return earlier
    before = regions.key(conn, code, kid)
    params = {"at": at, "region": code, "kid": kid}
    if before is not None:
        conn.execute(
            "UPDATE region_keys SET status = 'revoked',"  # noqa: S608
            f" revoked_at = {EARLIER_AT}"
            " WHERE region = :region AND kid = :kid",
            params,
        )
        after = regions.key(conn, code, kid)
        assert after is not None  # updated in this transaction
        revoked_at = after.revoked_at
        before_json, after_json = key_json(before), key_json(after)
    else:
        cur = conn.execute(
            f"UPDATE removed_keys SET revoked_at = {EARLIER_AT}"  # noqa: S608
            " WHERE region = :region AND kid = :kid",
            params,
        )
        if cur.rowcount == 0:
            raise NotFoundError(f"region {code} has no key {kid}", region=code, kid=kid)
        row = conn.execute(
            "SELECT revoked_at FROM removed_keys WHERE region = ? AND kid = ?", (code, kid)
        ).fetchone()
        revoked_at = opt_time(row[0] if row else None)
        before_json = {"kid": kid, "removed": True}
        after_json = {"kid": kid, "removed": True, "revoked_at": opt_ts(revoked_at)}
    result = SubmissionResult(
        SubmissionKind.KEY_REVOCATION, code, digest, now, kid=kid, revoked_at=revoked_at
    )
    _record_submission(conn, result, actor)
    if before_json != after_json:
        regions.bump_version(conn)
    audit.append(conn, AuditEvent(actor, "key.revoke", now, code, before_json, after_json))
    return result


def apply_revocation_batch(conn: Connection, change: RevocationBatchChange) -> SubmissionResult:
    """Record a revocation batch and revoke the conversions it reaches."""
    check_actor(change.actor)
    at = ts(change.effective_at)
    earlier = submission(conn, change.digest)
    if earlier is not None:
        return earlier
    regions.require_region(conn, change.region)
    used = conn.execute(
        "SELECT digest FROM submissions WHERE region = ? AND kind = ? AND batch_id = ?",
        (change.region, SubmissionKind.REVOCATIONS.value, change.batch_id),
    ).fetchone()
    if used is not None:
        raise BatchConflictError(
            f"batch id {change.batch_id} of region {change.region} was already used "
            "for a different batch",
            region=change.region,
            batch_id=change.batch_id,
        )
    conn.executemany(
        "INSERT INTO code_revocations (region, code_key, effective_at, batch_id)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (region, code_key) DO UPDATE SET"
        " effective_at = excluded.effective_at, batch_id = excluded.batch_id"
        " WHERE excluded.effective_at < code_revocations.effective_at",
        # In key order: neighbouring rows land on the same index pages (a batch of 10,000
        # into a million rows takes half the time it does in random order).
        [(change.region, k, at, change.batch_id) for k in sorted(change.codes)],
    )
    conn.executemany(
        "INSERT INTO holder_revocations (region, holder, effective_at, batch_id)"
        " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [(change.region, h, at, change.batch_id) for h in sorted(change.holders)],
    )
    candidates = _conversions_of(conn, change.region, change.codes, change.holders)
    revoked = conversions_to_revoke(change, candidates)
    conn.executemany(
        "UPDATE conversions SET revoked_at = ? WHERE region = ? AND source_key = ?",
        [(ts(when), change.region, key) for key, when in sorted(revoked.items())],
    )
    # Home codes given to arrival declarations made from these codes go with them.
    declared = declarations.revoke_for_batch(conn, change)
    result = revocation_result(change, len(revoked) + declared)
    _record_submission(conn, result, change.actor)
    regions.bump_version(conn)
    audit.append(conn, revocation_audit(change, len(revoked) + declared))
    return result


_IN_CHUNK = 500  # values per ``IN (...)`` list: well below either backend's parameter limit


def _conversions_of(
    conn: Connection, code: str, keys: tuple[str, ...], holders: tuple[str, ...]
) -> list[StoredConversion]:
    """The region's conversions whose source key or holder is among those named (one query
    per 500 values: a batch of 10,000 entries is 20 queries, not 20,000)."""
    found: dict[str, StoredConversion] = {}
    if (
        conn.execute("SELECT 1 FROM conversions WHERE region = ? LIMIT 1", (code,)).fetchone()
        is None
    ):
        return []  # a region that converts nothing (show mode) has no conversions to look up
    for column, values in (("source_key", keys), ("holder", holders)):
        for start in range(0, len(values), _IN_CHUNK):
            chunk = values[start : start + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = conn.execute(
                "SELECT source_key, holder, issued_at, revoked_at FROM conversions"  # noqa: S608
                f" WHERE region = ? AND {column} IN ({marks})",
                (code, *chunk),
            ).fetchall()
            for r in rows:
                found[str(r[0])] = StoredConversion(
                    str(r[0]), str(r[1]), from_unix(r[2]), opt_time(r[3])
                )
    return [found[k] for k in sorted(found)]


def revocations(
    conn: Connection, code: str | None
) -> tuple[list[CodeRevocation], list[HolderRevocation]]:
    """Code revocations (code keys) and holder revocations (pseudonyms), each ordered by region
    then key (then time): the same order from every backend."""
    where, params = ("", ()) if code is None else (" WHERE region = ?", (code,))
    rows = conn.execute(
        "SELECT region, code_key, effective_at FROM code_revocations"  # noqa: S608
        + where
        + " ORDER BY region, code_key",
        params,
    ).fetchall()
    codes = [CodeRevocation(r[0], r[1], from_unix(r[2])) for r in rows]
    rows = conn.execute(
        "SELECT region, holder, effective_at FROM holder_revocations"  # noqa: S608
        + where
        + " ORDER BY region, holder, effective_at",
        params,
    ).fetchall()
    holders = [HolderRevocation(r[0], r[1], from_unix(r[2])) for r in rows]
    return codes, holders


STREAM_CHUNK = 5000  # rows fetched at a time by stream_revocations


def stream_revocations(conn: Connection, after: int, into: RevocationSink) -> int:
    """Feed ``into`` the code revocations, then the holder revocations, of the batches applied
    after audit entry ``after`` (every row when ``after`` is negative: a full read, ordered by
    region); returns the audit position read up to (the last entry's seq).

    A batch's rows carry its id and its ``revocations.apply`` audit entry is written in the
    same transaction, so the audit entries since a position name exactly the batches to read
    (a code revoked again earlier is rewritten with the later batch's id). Rows are
    ``(region, keyed value, effective unix seconds)``, fetched :data:`STREAM_CHUNK` at a time
    so that a million rows are never held at once."""
    row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM audit_log").fetchone()
    head = int(row[0]) if row else 0
    if 0 <= after <= head:
        batches = _batches_since(conn, after)
    else:  # a full read (or the audit went back: a restored database)
        batches = None
    for table, column, add in (
        ("code_revocations", "code_key", into.add_codes),
        ("holder_revocations", "holder", into.add_holders),
    ):
        select = f"SELECT region, {column}, effective_at FROM {table}"  # noqa: S608
        if batches is None:
            _feed(conn.execute(select + f" ORDER BY region, {column}"), add)
            continue
        for region, batch_id in batches:
            _feed(
                conn.execute(select + " WHERE region = ? AND batch_id = ?", (region, batch_id)),
                add,
            )
    return head


def _batches_since(conn: Connection, after: int) -> list[tuple[str, str]]:
    """(region, batch id) of every revocation batch applied after audit entry ``after``."""
    rows = conn.execute(
        "SELECT region, after FROM audit_log WHERE seq > ? AND action = ? ORDER BY seq",
        (after, "revocations.apply"),
    ).fetchall()
    found: list[tuple[str, str]] = []
    for region, after_json in rows:
        batch_id = json.loads(after_json).get("batch_id") if after_json else None
        if isinstance(batch_id, str) and (region, batch_id) not in found:
            found.append((str(region), batch_id))
    return found


def _feed(cur: Cursor, add: Callable[[list[tuple[str, str, int]]], None]) -> None:
    while True:
        rows = cur.fetchmany(STREAM_CHUNK)
        if not rows:
            return
        add(rows)
