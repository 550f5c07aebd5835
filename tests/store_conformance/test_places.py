"""PlaceStore: venues (audited, versioned), visits in batches, the tracing reads, the purge.

Both backends answer alike: a venue change is audited and moves the venues' counter and the
registry's (the change feed); visits are found by pseudonym within a window, contacts by venue
within a margin, never the traced person's own visits nor visits without a holder.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from keys.audit import AuditEvent, verify_store
from keys.errors import AlreadyExistsError, NotFoundError
from keys.places import Venue, VisitEntry
from keys.store import Store
from store_conformance.data import T0

MIN = timedelta(minutes=1)
MALL, SHOP, FLATS = "PL" + "a" * 16, "PL" + "b" * 16, "PL" + "c" * 16
ACTOR = "operator:test"


def venue(vid: str, name: str, division: str = "370102", category: str = "mall") -> Venue:
    return Venue(vid, name, division, category, "泉城路1号", True, f"SDP1:{vid}.sig", "k1", T0)


def visit(minutes: int, where: str, holder: str, decision: str = "recognised") -> VisitEntry:
    reason = "RECOGNISED" if decision == "recognised" else "NOT_GREEN"
    return VisitEntry(T0 + minutes * MIN, where, holder, decision, reason)


def test_a_venue_is_added_listed_disabled_and_audited(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        v0, r0 = await store.place_version(), await store.registry_version()
        await store.add_venue(venue(SHOP, "大润发"), actor=ACTOR, now=T0)
        await store.add_venue(venue(MALL, "银座商城", "370103"), actor=ACTOR, now=T0)
        assert await store.place_version() == v0 + 2
        assert await store.registry_version() == r0 + 2  # the change feed fires
        assert [v.id for v in await store.list_venues()] == [SHOP, MALL]  # by division
        assert (await store.get_venue(MALL)).name == "银座商城"
        off = await store.set_venue_enabled(SHOP, False, actor=ACTOR, now=T0 + MIN)
        assert (off.enabled, off.disabled_at) == (False, T0 + MIN)
        again = await store.set_venue_enabled(SHOP, False, actor=ACTOR, now=T0 + 2 * MIN)
        assert again == off  # no change, no audit entry
        assert [v.id for v in await store.list_venues(include_disabled=False)] == [MALL]
        code = await store.set_venue_code(MALL, "SDP1:new.sig", "k2", actor=ACTOR, now=T0)
        assert (code.code, code.kid) == ("SDP1:new.sig", "k2")
        on = await store.set_venue_enabled(SHOP, True, actor=ACTOR, now=T0 + 3 * MIN)
        assert (on.enabled, on.disabled_at) == (True, None)
        _, entries = await store.read_audit(0, 100)
        venue_actions = [(e.action, e.actor) for e in entries if e.action.startswith("venue.")]
        assert venue_actions == [
            ("venue.add", ACTOR),
            ("venue.add", ACTOR),
            ("venue.disable", ACTOR),
            ("venue.reissue", ACTOR),
            ("venue.enable", ACTOR),
        ]
        await verify_store(store)

    arun(scenario())


def test_a_venue_id_is_added_once_and_an_unknown_one_is_not_found(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.add_venue(venue(MALL, "a"), actor=ACTOR, now=T0)
        with pytest.raises(AlreadyExistsError):
            await store.add_venue(venue(MALL, "b"), actor=ACTOR, now=T0)
        assert (await store.get_venue(MALL)).name == "a"
        with pytest.raises(NotFoundError):
            await store.get_venue(SHOP)
        with pytest.raises(NotFoundError):
            await store.set_venue_enabled(SHOP, False, actor=ACTOR, now=T0)

    arun(scenario())


def test_visits_are_found_by_pseudonym_within_the_window(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.append_visits(
            [visit(0, MALL, "h1-a"), visit(5, SHOP, "h1-a", "refused"), visit(7, MALL, "h1-b")]
        )
        await store.append_visits([visit(60, FLATS, "h1-a2"), visit(200, MALL, "h1-a")])
        found = await store.visits_of(["h1-a", "h1-a2"], T0, T0 + 60 * MIN, limit=10)
        assert [(v.venue, v.holder, v.decision) for v in found] == [
            (MALL, "h1-a", "recognised"),
            (SHOP, "h1-a", "refused"),
            (FLATS, "h1-a2", "recognised"),  # the window's end is included
        ]
        assert await store.visits_of(["h1-a"], T0, T0 + 60 * MIN, limit=1) == found[:1]
        assert await store.visits_of(["h1-none"], T0, T0 + 999 * MIN, limit=10) == []

    arun(scenario())


def test_contacts_are_other_holders_at_the_same_venue_within_the_margin(
    store: Store, arun: Any
) -> None:
    async def scenario() -> None:
        await store.append_visits(
            [
                visit(0, MALL, "h1-a"),  # the traced person
                visit(10, MALL, "h1-b"),  # 10 minutes later, same venue: a contact
                visit(-10, MALL, "h1-c", "refused"),  # before, refused: still a contact
                visit(33, MALL, "h1-d"),  # 31 minutes after the later visit: outside 30
                visit(5, SHOP, "h1-e"),  # another venue
                visit(3, MALL, ""),  # no holder (a code that did not verify): nobody
                visit(2, MALL, "h1-a"),  # the traced person again: not a contact
                visit(100, SHOP, "h1-a"),
                visit(120, SHOP, "h1-e"),  # a contact at the second visit
            ]
        )
        found = await store.contacts_of(
            ["h1-a"], T0 - 60 * MIN, T0 + 180 * MIN, margin_seconds=30 * 60, limit=100
        )
        pairs = {(c.holder, c.venue, c.at) for c in found}
        assert pairs == {
            ("h1-b", MALL, T0 + 10 * MIN),
            ("h1-c", MALL, T0 - 10 * MIN),
            ("h1-e", SHOP, T0 + 120 * MIN),
        }
        near = {(c.holder, c.near) for c in found if c.holder == "h1-b"}
        assert near == {("h1-b", T0), ("h1-b", T0 + 2 * MIN)}  # near both traced visits
        assert [c.at for c in found] == sorted(c.at for c in found)
        # The window bounds the traced visits, not the contacts' times.
        late = await store.contacts_of(
            ["h1-a"], T0 + 60 * MIN, T0 + 180 * MIN, margin_seconds=30 * 60, limit=100
        )
        assert {c.holder for c in late} == {"h1-e"}
        none = await store.contacts_of(
            ["h1-a"], T0 - 60 * MIN, T0 + 180 * MIN, margin_seconds=0, limit=100
        )
        assert none == []

    arun(scenario())


def test_visits_before_the_cutoff_are_purged(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.append_visits([visit(0, MALL, "h1-a"), visit(10, MALL, "h1-b")])
        assert await store.purge_visits(T0 + 5 * MIN, dry_run=True) == 1
        assert len(await store.visits_of(["h1-a"], T0, T0 + MIN, limit=10)) == 1
        assert await store.purge_visits(T0 + 5 * MIN) == 1
        assert await store.visits_of(["h1-a"], T0, T0 + MIN, limit=10) == []
        assert len(await store.visits_of(["h1-b"], T0, T0 + 20 * MIN, limit=10)) == 1

    arun(scenario())


def test_a_tracing_query_is_written_to_the_audit_trail(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        after = {"purpose": "case 2020-0311-17", "results": 2, "outcome": "OK"}
        event = AuditEvent("tracer:cdc-jinan", "trace.venues", T0, "370000", None, after)
        await store.record_trace(event)
        _, entries = await store.read_audit(0, 100)
        (entry,) = [e for e in entries if e.action == "trace.venues"]
        assert (entry.actor, entry.after) == ("tracer:cdc-jinan", after)
        await verify_store(store)

    arun(scenario())


def test_a_tracing_query_names_one_to_64_pseudonyms(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        with pytest.raises(ValueError):
            await store.visits_of([], T0, T0 + MIN, limit=10)
        with pytest.raises(ValueError):
            await store.contacts_of(
                [f"h1-{i}" for i in range(65)], T0, T0 + MIN, margin_seconds=60, limit=10
            )

    arun(scenario())
