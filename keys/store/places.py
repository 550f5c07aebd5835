"""The venues-and-visits aggregate's SQL, and its store role methods (:class:`PlaceStoreMethods`,
mixed into :class:`keys.store.facade.StoreFacade`, so both backends run the same SQL).

Venue changes are audited (``venue.add``, ``venue.disable``, ``venue.enable``) and increase both
``place_version`` (what a serving gateway compares to reload its venues) and the registry's
version (what wakes the change feed of every replica). Visits are appended in batches of fixed
statement shapes (:data:`keys.store.rows.BATCH_SHAPES`) by :class:`gateway.places.visits.VisitLog`.
A tracing query (:meth:`PlaceStoreMethods.record_trace`) is audited in its own transaction
before it is answered.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from keys.audit import AuditEvent
from keys.errors import AlreadyExistsError, NotFoundError
from keys.model import HOME_REGION
from keys.places import Contact, Venue, VisitEntry
from keys.store import audit, regions
from keys.store.dbapi import INTEGRITY_ERRORS, Connection
from keys.store.rows import batch_shapes, check_actor, opt_time, ts, values_sql
from keys.timeutil import from_unix

_R = TypeVar("_R")
_VENUE_COLUMNS = (
    "id, name, division, category, address, enabled, code, kid, created_at, disabled_at"
)
_VISIT_COLUMNS = "at, venue, holder, decision, reason"
MAX_HOLDERS_PER_QUERY = 64  # the pseudonyms of one traced person: one per region


def _venue(row: Any) -> Venue:
    vid, name, division, category, address, enabled, code, kid, created, disabled = row
    return Venue(
        str(vid),
        str(name),
        str(division),
        str(category),
        str(address),
        bool(enabled),
        str(code),
        str(kid),
        from_unix(created),
        opt_time(disabled),
    )


def venue_json(venue: Venue) -> dict[str, Any]:
    """What the audit trail records of a venue (no place code: it is signed, not a secret,
    but long)."""
    return {
        "id": venue.id,
        "name": venue.name,
        "division": venue.division,
        "category": venue.category,
        "address": venue.address,
        "enabled": venue.enabled,
        "kid": venue.kid,
    }


def _bump(conn: Connection) -> None:
    conn.execute("UPDATE place_version SET version = version + 1 WHERE id = 1")
    regions.bump_version(conn)  # the change feed of every replica fires on this one


def place_version(conn: Connection) -> int:
    """The venues' change counter."""
    row = conn.execute("SELECT version FROM place_version WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def get_venue(conn: Connection, venue_id: str) -> Venue:
    """One venue; :class:`NotFoundError` if there is none."""
    row = conn.execute(
        f"SELECT {_VENUE_COLUMNS} FROM venues WHERE id = ?",  # noqa: S608
        (venue_id,),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no venue {venue_id[:24]}")
    return _venue(row)


def list_venues(conn: Connection, include_disabled: bool) -> list[Venue]:
    """Venues by division then name then id."""
    where = "" if include_disabled else " WHERE enabled = 1"
    rows = conn.execute(
        f"SELECT {_VENUE_COLUMNS} FROM venues{where} ORDER BY division, name, id"  # noqa: S608
    ).fetchall()
    return [_venue(r) for r in rows]


def add_venue(conn: Connection, venue: Venue, actor: str, now: datetime) -> Venue:
    """Insert a venue (audited); :class:`AlreadyExistsError` if its id is taken."""
    try:
        conn.execute(
            f"INSERT INTO venues ({_VENUE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
            (
                venue.id,
                venue.name,
                venue.division,
                venue.category,
                venue.address,
                1 if venue.enabled else 0,
                venue.code,
                venue.kid,
                ts(venue.created_at),
                None if venue.disabled_at is None else ts(venue.disabled_at),
            ),
        )
    except INTEGRITY_ERRORS:
        raise AlreadyExistsError(f"venue {venue.id} already exists") from None
    _bump(conn)
    audit.append(conn, AuditEvent(actor, "venue.add", now, HOME_REGION, None, venue_json(venue)))
    return venue


def set_venue_enabled(
    conn: Connection, venue_id: str, enabled: bool, actor: str, now: datetime
) -> Venue:
    """Enable or disable a venue (audited when it changes); the venue as stored after."""
    before = get_venue(conn, venue_id)
    if before.enabled == enabled:
        return before
    conn.execute(
        "UPDATE venues SET enabled = ?, disabled_at = ? WHERE id = ?",
        (1 if enabled else 0, None if enabled else ts(now), venue_id),
    )
    after = get_venue(conn, venue_id)
    _bump(conn)
    action = "venue.enable" if enabled else "venue.disable"
    audit.append(
        conn,
        AuditEvent(actor, action, now, HOME_REGION, venue_json(before), venue_json(after)),
    )
    return after


def set_venue_code(
    conn: Connection, venue_id: str, code: str, kid: str, actor: str, now: datetime
) -> Venue:
    """Replace a venue's place code (a re-issue with the current place key), audited."""
    before = get_venue(conn, venue_id)
    conn.execute("UPDATE venues SET code = ?, kid = ? WHERE id = ?", (code, kid, venue_id))
    after = get_venue(conn, venue_id)
    _bump(conn)
    audit.append(
        conn,
        AuditEvent(actor, "venue.reissue", now, HOME_REGION, venue_json(before), venue_json(after)),
    )
    return after


def visit_rows(entries: Sequence[VisitEntry]) -> list[tuple[Any, ...]]:
    """The rows of visits, each text cut to its bound (the pseudonym and reason are the
    gateway's own; the venue id was checked against the known venues)."""
    return [
        (int(e.at.timestamp()), e.venue[:18], e.holder[:64], e.decision[:16], e.reason[:64])
        for e in entries
    ]


def append_visits(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Append visit rows with statements of fixed shapes."""
    for chunk in batch_shapes(rows):
        conn.execute(
            values_sql(
                f"INSERT INTO visits ({_VISIT_COLUMNS}) VALUES {{values}}",  # noqa: S608
                5,
                len(chunk),
            ),
            [value for row in chunk for value in row],
        )


def _holders_in(holders: Sequence[str]) -> str:
    if not 0 < len(holders) <= MAX_HOLDERS_PER_QUERY:
        raise ValueError(f"a tracing query names 1 to {MAX_HOLDERS_PER_QUERY} pseudonyms")
    return ", ".join(["?"] * len(holders))


def visits_of(
    conn: Connection, holders: Sequence[str], start: int, end: int, limit: int
) -> list[VisitEntry]:
    """The visits of any of ``holders`` in ``[start, end]``, oldest first, at most ``limit``."""
    marks = _holders_in(holders)
    rows = conn.execute(
        f"SELECT {_VISIT_COLUMNS} FROM visits WHERE holder IN ({marks})"  # noqa: S608
        " AND at >= ? AND at <= ? ORDER BY at, venue, holder LIMIT ?",
        (*holders, start, end, limit),
    ).fetchall()
    return [VisitEntry(from_unix(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


def contacts_of(
    conn: Connection, holders: Sequence[str], start: int, end: int, margin: int, limit: int
) -> list[Contact]:
    """Other holders at the same venues within ``margin`` seconds of the visits of any of
    ``holders`` in ``[start, end]``: one row per (contact, venue, time, traced visit), oldest
    first, at most ``limit``. Visits without a holder (a code that did not verify) are none."""
    marks = _holders_in(holders)
    rows = conn.execute(
        "SELECT DISTINCT o.holder, o.venue, o.at, s.at FROM visits s"  # noqa: S608
        " JOIN visits o ON o.venue = s.venue AND o.at >= s.at - ? AND o.at <= s.at + ?"
        f" WHERE s.holder IN ({marks}) AND s.at >= ? AND s.at <= ?"
        f" AND o.holder != '' AND o.holder NOT IN ({marks})"
        " ORDER BY o.at, o.venue, o.holder, s.at LIMIT ?",
        (margin, margin, *holders, start, end, *holders, limit),
    ).fetchall()
    return [Contact(r[0], r[1], from_unix(r[2]), from_unix(r[3])) for r in rows]


def purge_visits(conn: Connection, before: int, dry_run: bool) -> int:
    """Delete (or count) the visits recorded before ``before``; how many."""
    row = conn.execute("SELECT COUNT(*) FROM visits WHERE at < ?", (before,)).fetchone()
    count = int(row[0]) if row else 0
    if count and not dry_run:
        conn.execute("DELETE FROM visits WHERE at < ?", (before,))
    return count


def record_trace(conn: Connection, event: AuditEvent) -> None:
    """Write a tracing query to the audit trail."""
    audit.append(conn, event)


class PlaceStoreMethods(ABC):
    """The :class:`keys.store.protocols.PlaceStore` role over a backend's ``_read``/``_write``."""

    @abstractmethod
    async def _read(self, what: str, fn: Callable[[Connection], _R]) -> _R: ...

    @abstractmethod
    async def _write(
        self, what: str, fn: Callable[[Connection], _R], *, concurrent: bool = False
    ) -> _R: ...

    async def place_version(self) -> int:
        """The venues' change counter (increases with every venue change)."""
        return await self._read("place_version", place_version)

    async def add_venue(self, venue: Venue, *, actor: str, now: datetime) -> Venue:
        """Store a new venue, audited as ``venue.add``. Raises :class:`AlreadyExistsError`."""
        check_actor(actor)
        return await self._write("add_venue", lambda c: add_venue(c, venue, actor, now))

    async def set_venue_enabled(
        self, venue_id: str, enabled: bool, *, actor: str, now: datetime
    ) -> Venue:
        """Enable or disable a venue (audited when it changes). Raises :class:`NotFoundError`."""
        check_actor(actor)
        return await self._write(
            "set_venue_enabled", lambda c: set_venue_enabled(c, venue_id, enabled, actor, now)
        )

    async def set_venue_code(
        self, venue_id: str, code: str, kid: str, *, actor: str, now: datetime
    ) -> Venue:
        """Replace a venue's place code, audited as ``venue.reissue``. Raises
        :class:`NotFoundError`."""
        check_actor(actor)
        return await self._write(
            "set_venue_code", lambda c: set_venue_code(c, venue_id, code, kid, actor, now)
        )

    async def get_venue(self, venue_id: str) -> Venue:
        """One venue. Raises :class:`NotFoundError`."""
        return await self._read("get_venue", lambda c: get_venue(c, venue_id))

    async def list_venues(self, *, include_disabled: bool = True) -> list[Venue]:
        """Every venue (or the enabled ones), by division, name and id."""
        return await self._read("list_venues", lambda c: list_venues(c, include_disabled))

    async def append_visits(self, entries: Sequence[VisitEntry]) -> None:
        """Append visits in one transaction (a concurrent write, like the recognition log)."""
        rows = visit_rows(entries)
        if rows:
            await self._write("append_visits", lambda c: append_visits(c, rows), concurrent=True)

    async def visits_of(
        self, holders: Sequence[str], start: datetime, end: datetime, *, limit: int
    ) -> list[VisitEntry]:
        """The visits of any of ``holders`` (pseudonyms) from ``start`` to ``end`` inclusive,
        oldest first, at most ``limit``. Raises ``ValueError``."""
        begin, until, names = ts(start), ts(end), tuple(holders)
        return await self._read("visits_of", lambda c: visits_of(c, names, begin, until, limit))

    async def contacts_of(
        self,
        holders: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        margin_seconds: int,
        limit: int,
    ) -> list[Contact]:
        """Other holders at the venues of those visits within ``margin_seconds`` of them
        (:func:`contacts_of`). Raises ``ValueError``."""
        begin, until, names = ts(start), ts(end), tuple(holders)
        return await self._read(
            "contacts_of",
            lambda c: contacts_of(c, names, begin, until, margin_seconds, limit),
        )

    async def purge_visits(self, before: datetime, *, dry_run: bool = False) -> int:
        """Delete the visits recorded before ``before`` (count them, ``dry_run``)."""
        cut = ts(before)
        return await self._write("purge_visits", lambda c: purge_visits(c, cut, dry_run))

    async def record_trace(self, event: AuditEvent) -> None:
        """Write a tracing query to the audit trail (before it is answered)."""
        check_actor(event.actor)
        await self._write("record_trace", lambda c: record_trace(c, event))
