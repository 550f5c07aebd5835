"""DeclarationStore: one current declaration per holder, superseding, revocation with the partner
code it was made from, counts, and retention (docs/api.md "DeclarationService", docs/retention.md).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

from keys.personal import DeclarationCount, DeclarationRecord
from keys.store import Store
from store_conformance.data import ACTOR, T0, ZHEJIANG, anchors, revocation_batch

DAY = timedelta(days=1)


def declaration(ident: str, holder: str = "h1-a", **changes: Any) -> DeclarationRecord:
    fields: dict[str, Any] = {
        "id": ident,
        "holder": holder,
        "digest": "d-" + ident,
        "origin": "330000",
        "origin_kind": "province",
        "arrival_date": date(2026, 3, 9),
        "colour": "green",
        "rules": (),
        "green_from": None,
        "exempt": True,
        "code": "SD1:" + ident,
        "issued_at": T0,
        "expires_at": T0 + 7 * DAY,
        "created_at": T0,
        "partner_region": "330000",
        "partner_source_key": "c1-" + ident,
        "partner_holder": "h1-zj-" + holder,
        "partner_issued_at": T0 - DAY,
    }
    fields.update(changes)
    return DeclarationRecord(**fields)


def test_a_declaration_round_trips_and_the_same_one_again_is_a_duplicate(
    store: Store, arun: Any
) -> None:
    yellow = declaration(
        "a",
        colour="yellow",
        rules=("ARRIVED_UNDER_14_DAYS", "PARTNER_CODE_YELLOW"),
        green_from=date(2026, 3, 23),
        exempt=False,
    )

    async def scenario() -> list[Any]:
        first = await store.declare(yellow, T0)
        again = await store.declare(replace(yellow, id="a2", code="SD1:a2"), T0 + DAY)
        return [first, again, await store.get_declaration("a"), await store.get_declaration("a2")]

    first, again, stored, missing = arun(scenario())
    assert (first.record, first.duplicate, first.superseded) == (yellow, False, "")
    assert (again.record, again.duplicate) == (yellow, True)
    assert stored == yellow and stored.status == "current"
    assert missing is None


def test_a_new_declaration_supersedes_and_an_expired_one_is_not_repeated(
    store: Store, arun: Any
) -> None:
    async def scenario() -> list[Any]:
        await store.declare(declaration("a"), T0)
        revised = await store.declare(declaration("b", digest="d-other"), T0 + DAY)
        # Same digest as b, but b's code has expired by then: a new declaration, not b again.
        late = await store.declare(declaration("c", digest="d-other"), T0 + 8 * DAY)
        other = await store.declare(declaration("x", holder="h1-other"), T0)
        found = [await store.get_declaration(i) for i in ("a", "b", "c", "x")]
        return [revised, late, other, found]

    revised, late, other, (a, b, c, x) = arun(scenario())
    assert (revised.duplicate, revised.superseded) == (False, "a")
    assert (late.duplicate, late.superseded) == (False, "b")
    assert other.superseded == ""
    assert (a.status, a.superseded_by, a.revoked_at) == ("superseded", "b", T0 + DAY)
    assert (b.status, b.superseded_by) == ("superseded", "c")
    assert c.status == x.status == "current"


def test_revoking_the_partner_code_or_holder_revokes_the_declarations_made_from_them(
    store: Store, arun: Any
) -> None:
    async def scenario() -> list[Any]:
        await store.install_partner(ZHEJIANG, anchors(61), replace=False, actor=ACTOR, now=T0)
        await store.declare(declaration("a"), T0)
        await store.declare(declaration("b", holder="h1-b"), T0)
        await store.declare(declaration("n", holder="h1-n", partner_region=""), T0)
        receipt = await store.apply_revocation_batch(
            revocation_batch(
                "330000", "b1", codes=("c1-a",), holders=("h1-zj-h1-b",), effective_at=T0 + DAY
            )
        )
        # A declaration made while the revocation was on its way is stored revoked.
        late = await store.declare(declaration("a2", holder="h1-a2", partner_source_key="c1-a"), T0)
        found = [await store.get_declaration(i) for i in ("a", "b", "n")]
        return [receipt, late, found]

    receipt, late, (a, b, n) = arun(scenario())
    assert receipt.conversions_revoked == 2
    assert (a.status, a.revoked_at, a.revoked_reason) == ("revoked", T0 + DAY, "partner_revoked")
    assert b.status == "revoked"
    assert n.status == "current"
    assert (late.record.status, late.record.revoked_at) == ("revoked", T0 + DAY)


def test_two_holders_declaring_at_once_each_keep_one_current_declaration(
    store: Store, arun: Any
) -> None:
    async def scenario() -> list[Any]:
        await asyncio.gather(
            *(
                store.declare(declaration(f"{h}{n}", holder=f"h1-{h}", digest=f"d{n}"), T0)
                for n in range(5)
                for h in "pq"
            )
        )
        return await store.count_declarations(("origin",))

    assert arun(scenario()) == [DeclarationCount(2, origin="330000")]


def test_declarations_are_counted_by_origin_day_and_colour(store: Store, arun: Any) -> None:
    async def scenario() -> list[Any]:
        for n, (origin, day, colour) in enumerate(
            [
                ("110000", date(2026, 3, 9), "green"),
                ("110000", date(2026, 3, 9), "yellow"),
                ("110000", date(2026, 3, 10), "green"),
                ("JP", date(2026, 3, 10), "yellow"),
            ]
        ):
            kind = "abroad" if origin == "JP" else "province"
            await store.declare(
                declaration(
                    f"d{n}", f"h1-{n}", origin=origin, origin_kind=kind, arrival_date=day,
                    colour=colour,
                ),
                T0,
            )  # fmt: skip
        await store.declare(declaration("d0b", "h1-0", origin="110000", digest="new"), T0)
        return [
            await store.count_declarations(("origin", "day")),
            await store.count_declarations(("colour",), since=date(2026, 3, 10)),
            await store.count_declarations(until=date(2026, 3, 9)),
            await store.count_declarations(superseded=True),
        ]

    by_origin_day, by_colour, until, everything = arun(scenario())
    # d0 is superseded by d0b (same origin and day): counted once.
    assert by_origin_day == [
        DeclarationCount(2, origin="110000", day="2026-03-09"),
        DeclarationCount(1, origin="110000", day="2026-03-10"),
        DeclarationCount(1, origin="JP", day="2026-03-10"),
    ]
    assert by_colour == [DeclarationCount(1, colour="green"), DeclarationCount(1, colour="yellow")]
    assert until == [DeclarationCount(2)]
    assert everything == [DeclarationCount(5)]


def test_expired_declarations_are_purged_but_recently_revoked_ones_kept(
    store: Store, arun: Any
) -> None:
    cut = T0 + 10 * DAY

    async def scenario() -> list[Any]:
        await store.install_partner(ZHEJIANG, anchors(62), replace=False, actor=ACTOR, now=T0)
        await store.declare(declaration("old"), T0)  # expires T0 + 7 days
        await store.declare(declaration("new", "h1-new", expires_at=T0 + 20 * DAY), T0)
        await store.declare(declaration("rev", "h1-rev", partner_source_key="c1-rev"), T0)
        await store.apply_revocation_batch(
            revocation_batch("330000", "b", codes=("c1-rev",), effective_at=cut + DAY)
        )
        dry = await store.purge(recognitions_before=None, conversions_before=cut, dry_run=True)
        done = await store.purge(recognitions_before=None, conversions_before=cut)
        left = [await store.get_declaration(i) for i in ("old", "new", "rev")]
        return [dry, done, left]

    dry, done, (old, new, rev) = arun(scenario())
    assert (dry.declarations, dry.dry_run, done.declarations) == (1, True, 1)
    assert old is None
    assert new is not None and rev is not None


def test_a_declarations_home_code_is_found_by_its_id_with_its_revocation(
    store: Store, arun: Any
) -> None:
    """What GetCodeStatus answers from (HomeCodeStore.home_code): a superseded declaration's
    code is revoked from the moment it was superseded."""

    async def scenario() -> list[Any]:
        await store.declare(declaration("a", colour="yellow"), T0)
        before = await store.home_code("a")
        await store.declare(declaration("b", digest="d-other"), T0 + DAY)
        return [before, await store.home_code("a"), await store.home_code("b")]

    before, after, current = arun(scenario())
    assert before is not None and (before.code, before.colour, before.revoked_at) == (
        "SD1:a", "yellow", None,
    )  # fmt: skip
    assert after is not None and after.revoked_at == T0 + DAY
    assert current is not None and current.revoked_at is None and current.holder == "h1-a"
