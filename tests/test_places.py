"""Place codes verify offline with the published keys for exactly their window, across rotation
and withdrawal; a checkpoint's scan is checked in memory against the known venues; a tracing
query is bounded, counted per tracer and audited without the ID number (docs/verifying.md,
"Place codes"; docs/api.md, "Place codes and visits", "TracingService")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.places.book import VENUE_DISABLED, VENUE_UNKNOWN, VISIT_RECORDED, PlaceBook
from gateway.places.code import (
    PLACE_CODE_PREFIX,
    PlaceCodeClaims,
    issue_place_code,
    sign_place_code,
    verify_place_code,
)
from gateway.places.tracing import TraceLimits, Tracing
from gateway.tokens import GatewayTrust
from keys.crypto import b64url_decode, b64url_encode
from keys.errors import GatewayError
from keys.gatewaykeys import create_or_join, open_keyring, rotate, withdraw
from keys.jsonutil import canonical_json
from keys.keyring import GatewayKeyring
from keys.keyset import KeyRole
from keys.places import Venue, check_division, check_venue_text
from keys.pseudonym import Pseudonymiser
from keys.store import SQLiteStore

T0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)
VENUE = "PL0123456789abcdef"
CLAIMS = PlaceCodeClaims(VENUE, "银座商城 泉城路店", "370102", "mall")
ID_NUMBER = "110101199003071233"


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def store(loop: asyncio.AbstractEventLoop) -> Iterator[SQLiteStore]:
    store = loop.run_until_complete(SQLiteStore.open(":memory:"))
    yield store
    loop.run_until_complete(store.close())


@pytest.fixture
def keyring(loop: asyncio.AbstractEventLoop, store: SQLiteStore) -> GatewayKeyring:
    keys, _ = loop.run_until_complete(create_or_join(store, dev=True, passphrase=None, now=T0))
    return keys


def trust_of(keys: GatewayKeyring, now: datetime = T0) -> GatewayTrust:
    return GatewayTrust.from_key_infos(keys.public_keys(), now=now)


def place_code(keys: GatewayKeyring, now: datetime = T0, claims: PlaceCodeClaims = CLAIMS) -> str:
    info, key = keys.signer(KeyRole.PLACE, now)
    return issue_place_code(info, key, now, claims)


def reason(call: Any) -> str:
    try:
        call()
    except GatewayError as exc:
        return exc.reason
    return "OK"


# --- the code -------------------------------------------------------------------------------


def test_a_place_code_verifies_offline_for_exactly_its_window(keyring: GatewayKeyring) -> None:
    code = place_code(keyring)
    info, _ = keyring.signer(KeyRole.PLACE, T0)
    trust = trust_of(keyring)
    claims = verify_place_code(code, trust, T0)
    assert (claims.venue, claims.name, claims.division, claims.category) == (
        VENUE, "银座商城 泉城路店", "370102", "mall",
    )  # fmt: skip
    assert (claims.kid, claims.iat, claims.exp) == (
        info.kid, int(T0.timestamp()), int(info.not_after.timestamp()),
    )  # fmt: skip
    exp = datetime.fromtimestamp(claims.exp, UTC)
    assert verify_place_code(code, trust, exp).venue == VENUE
    assert reason(lambda: verify_place_code(code, trust, exp + timedelta(seconds=1))) == (
        "CODE_EXPIRED"
    )
    assert reason(lambda: verify_place_code(code, trust, T0 - timedelta(seconds=1))) == (
        "CODE_NOT_YET_VALID"
    )


def _resigned(code: str, keys: GatewayKeyring, role: KeyRole, **changes: Any) -> str:
    """``code``'s payload changed by ``changes`` (None: removed), signed with ``role``'s key."""
    body = code[len(PLACE_CODE_PREFIX) :].partition(".")[0]
    obj = json.loads(b64url_decode(body))
    for name, value in changes.items():
        if value is None:
            obj.pop(name)
        else:
            obj[name] = value
    text = b64url_encode(canonical_json(obj))
    _, key = keys.signer(role, T0)
    return f"{PLACE_CODE_PREFIX}{text}.{b64url_encode(key.sign(text.encode()))}"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(lambda c, k: c.replace("SDP1:", "SDP2:"), "MALFORMED", id="other-prefix"),
        pytest.param(lambda c, k: c + ".x", "MALFORMED", id="three-parts"),
        pytest.param(lambda c, k: c.partition(".")[0], "MALFORMED", id="no-signature"),
        pytest.param(lambda c, k: c[:-4] + ("AAAA" if c[-4:] != "AAAA" else "BBBB"),
                     "SIGNATURE_INVALID", id="signature-changed"),
        pytest.param(lambda c, k: _resigned(c, k, KeyRole.ATTEST), "SIGNATURE_INVALID",
                     id="signed-by-the-attest-key"),
        pytest.param(lambda c, k: _resigned(c, k, KeyRole.PLACE, kid="0" * 16), "KEY_UNKNOWN",
                     id="unknown-kid"),
        pytest.param(lambda c, k: _resigned(c, k, KeyRole.ATTEST,
                                            kid=k.signer(KeyRole.ATTEST, T0)[0].kid),
                     "KEY_UNKNOWN", id="an-attest-kid-is-no-place-key"),
        pytest.param(lambda c, k: _resigned(c, k, KeyRole.PLACE, extra="x"), "MALFORMED",
                     id="unknown-member"),
        pytest.param(lambda c, k: _resigned(c, k, KeyRole.PLACE, venue=None), "MALFORMED",
                     id="member-missing"),
        pytest.param(lambda c, k: _resigned(c, k, KeyRole.PLACE, typ="trustgw/home-code/v1"),
                     "MALFORMED", id="not-a-place-code"),
        pytest.param(lambda c, k: _resigned(c, k, KeyRole.PLACE, division="110101"),
                     "MALFORMED", id="not-in-the-province"),
        pytest.param(lambda c, k: _resigned(c, k, KeyRole.PLACE, exp=int(
                         k.signer(KeyRole.PLACE, T0)[0].not_after.timestamp()) + 1),
                     "KEY_NOT_VALID", id="outlasts-its-key"),
        pytest.param(lambda c, k: _resigned(c, k, KeyRole.PLACE, exp=2**40), "MALFORMED",
                     id="exp-out-of-range"),
        pytest.param(lambda c, k: _resigned(c, k, KeyRole.PLACE, iat=True), "MALFORMED",
                     id="iat-not-a-number"),
        pytest.param(lambda c, k: c + "A" * 1024, "OVERSIZED", id="oversized"),
        pytest.param(lambda c, k: "SD1:" + c[5:], "MALFORMED", id="a-home-code-prefix"),
    ],
)  # fmt: skip
def test_a_bad_place_code_is_refused_with_a_stable_reason(
    keyring: GatewayKeyring, mutate: Any, expected: str
) -> None:
    bad = mutate(place_code(keyring), keyring)
    assert reason(lambda: verify_place_code(bad, trust_of(keyring), T0 + DAY)) == expected


def test_place_codes_verify_across_a_rotation_and_a_withdrawal_refuses_what_came_after(
    loop: asyncio.AbstractEventLoop, store: SQLiteStore, keyring: GatewayKeyring
) -> None:
    old = place_code(keyring, T0)
    later = place_code(keyring, T0 + 10 * DAY)
    new_info = loop.run_until_complete(
        rotate(store, None, KeyRole.PLACE, T0 + 20 * DAY, activate_at=T0 + 20 * DAY)
    )
    rotated = loop.run_until_complete(open_keyring(store, None))
    new = place_code(rotated, T0 + 21 * DAY)
    assert rotated.signer(KeyRole.PLACE, T0 + 21 * DAY)[0].kid == new_info.kid
    trust = trust_of(rotated, T0 + 21 * DAY)
    for code in (old, later, new):  # the retired key's codes still verify
        assert verify_place_code(code, trust, T0 + 22 * DAY).venue == VENUE
    old_kid = keyring.signer(KeyRole.PLACE, T0)[0].kid
    loop.run_until_complete(
        withdraw(store, None, KeyRole.PLACE, old_kid, T0 + 5 * DAY, T0 + 22 * DAY)
    )
    withdrawn = trust_of(loop.run_until_complete(open_keyring(store, None)), T0 + 22 * DAY)
    assert verify_place_code(old, withdrawn, T0 + 22 * DAY).venue == VENUE  # signed before
    assert reason(lambda: verify_place_code(later, withdrawn, T0 + 22 * DAY)) == "KEY_REVOKED"
    assert verify_place_code(new, withdrawn, T0 + 22 * DAY).venue == VENUE


def test_claims_without_a_key_and_window_are_not_signed(keyring: GatewayKeyring) -> None:
    _, key = keyring.signer(KeyRole.PLACE, T0)
    with pytest.raises(ValueError):
        sign_place_code(CLAIMS, key)


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        pytest.param("370102", True, id="a-district-of-jinan"),
        pytest.param("371702", True, id="a-district-of-heze"),
        pytest.param("370000", False, id="the-province"),
        pytest.param("370100", False, id="a-city"),
        pytest.param("110101", False, id="another-province"),
        pytest.param("37010", False, id="five-digits"),
        pytest.param("\uff13\uff17\uff10\uff11\uff10\uff12", False, id="full-width-digits"),
    ],
)
def test_a_venue_is_in_a_district_of_the_home_province(code: str, ok: bool) -> None:
    if ok:
        assert check_division(code) == code
    else:
        with pytest.raises(ValueError):
            check_division(code)


def test_a_venue_name_is_printable_text_of_bounded_length() -> None:
    assert check_venue_text("  银座商城 ", "name", 100, required=True) == "银座商城"
    for bad in ("", "a" * 101, "a\nb", "a\u202eb"):
        with pytest.raises(ValueError):
            check_venue_text(bad, "name", 100, required=True)


# --- the checkpoint's scan ------------------------------------------------------------------


def _venue(code: str, kid: str, enabled: bool = True) -> Venue:
    return Venue(VENUE, CLAIMS.name, "370102", "mall", "", enabled, code, kid, T0)


def test_a_scan_is_checked_in_memory_against_the_known_venues(
    loop: asyncio.AbstractEventLoop, store: SQLiteStore, keyring: GatewayKeyring
) -> None:
    code = place_code(keyring)
    kid = keyring.signer(KeyRole.PLACE, T0)[0].kid
    holder: dict[str, GatewayKeyring] = {"keys": keyring}
    book = PlaceBook(store, lambda: holder["keys"])
    loop.run_until_complete(book.load())
    assert book.check(code, T0 + DAY).reason == VENUE_UNKNOWN
    loop.run_until_complete(store.add_venue(_venue(code, kid), actor="operator:t", now=T0))
    assert book.check(code, T0 + DAY).reason == VENUE_UNKNOWN  # not reloaded yet
    assert loop.run_until_complete(book.refresh_if_changed()) is True
    assert loop.run_until_complete(book.refresh_if_changed()) is False
    outcome = book.check(code, T0 + DAY)
    assert (outcome.reason, outcome.venue and outcome.venue.id) == (VISIT_RECORDED, VENUE)
    body, _, sig = code.rpartition(".")
    other = sig[:10] + ("B" if sig[10] != "B" else "C") + sig[11:]
    assert book.check(f"{body}.{other}", T0 + DAY).reason == "SIGNATURE_INVALID"
    assert book.check("not a place code", T0 + DAY).reason == "MALFORMED"
    assert book.check(code, T0 - DAY).reason == "CODE_NOT_YET_VALID"
    loop.run_until_complete(store.set_venue_enabled(VENUE, False, actor="operator:t", now=T0))
    loop.run_until_complete(book.refresh_if_changed())
    assert book.check(code, T0 + DAY).reason == VENUE_DISABLED
    loop.run_until_complete(store.set_venue_enabled(VENUE, True, actor="operator:t", now=T0))
    loop.run_until_complete(book.refresh_if_changed())
    assert book.check(code, T0 + DAY).reason == VISIT_RECORDED
    # A withdrawn place key: the cached verification goes with the keys it was made with.
    loop.run_until_complete(withdraw(store, None, KeyRole.PLACE, kid, T0, T0 + DAY))
    holder["keys"] = loop.run_until_complete(open_keyring(store, None))
    assert book.check(code, T0 + DAY).reason == "KEY_REVOKED"


# --- tracing queries ------------------------------------------------------------------------

PURPOSE = "case 2020-0311-17, Lixia district"


def _tracing(store: SQLiteStore, **limits: Any) -> Tracing:
    return Tracing(
        store, Pseudonymiser(b"s" * 32), lambda: ["110000", "310000"], TraceLimits(**limits)
    )


def _check(tracing: Tracing, **changes: Any) -> Any:
    args: dict[str, Any] = {
        "tracer": "cdc-jinan",
        "kind": "contacts",
        "id_number": ID_NUMBER,
        "regions": [],
        "start": T0,
        "end": T0 + DAY,
        "purpose": PURPOSE,
        "now": T0 + DAY,
        "margin": timedelta(minutes=30),
    }
    args.update(changes)
    return tracing.check(**args)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({}, "OK", id="within-bounds"),
        pytest.param({"purpose": ""}, "INVALID_REQUEST", id="no-purpose"),
        pytest.param({"purpose": "  case  "}, "INVALID_REQUEST", id="purpose-too-short"),
        pytest.param({"purpose": "x" * 201}, "INVALID_REQUEST", id="purpose-too-long"),
        pytest.param({"purpose": f"trace {ID_NUMBER}"}, "INVALID_REQUEST",
                     id="an-id-number-in-the-purpose"),
        pytest.param({"purpose": f"trace {ID_NUMBER[:17].lower()}x"}, "INVALID_REQUEST",
                     id="any-id-number-in-the-purpose"),
        pytest.param({"end": T0 + 14 * DAY}, "OK", id="the-longest-window"),
        pytest.param({"end": T0 + 14 * DAY + timedelta(seconds=1)}, "TRACE_WINDOW_TOO_LONG",
                     id="window-too-long"),
        pytest.param({"end": T0}, "TRACE_WINDOW_TOO_LONG", id="empty-window"),
        pytest.param({"end": T0 - DAY}, "TRACE_WINDOW_TOO_LONG", id="reversed-window"),
        pytest.param({"margin": timedelta(hours=4)}, "OK", id="the-widest-margin"),
        pytest.param({"margin": timedelta(hours=4, seconds=1)}, "TRACE_MARGIN_TOO_LONG",
                     id="margin-too-wide"),
        pytest.param({"margin": timedelta(seconds=-1)}, "TRACE_MARGIN_TOO_LONG",
                     id="negative-margin"),
        pytest.param({"id_number": " "}, "INVALID_REQUEST", id="no-id-number"),
        pytest.param({"id_number": "1" * 129}, "INVALID_REQUEST", id="id-number-too-long"),
        pytest.param({"regions": ["11000"]}, "INVALID_REQUEST", id="a-bad-region"),
    ],
)  # fmt: skip
def test_a_tracing_query_is_checked_against_its_bounds(
    store: SQLiteStore, changes: dict[str, Any], expected: str
) -> None:
    assert reason(lambda: _check(_tracing(store), **changes)) == expected


def test_a_query_names_the_person_by_one_pseudonym_per_region(store: SQLiteStore) -> None:
    pseudonym = Pseudonymiser(b"s" * 32)
    query = _check(_tracing(store))
    assert query.regions == ("110000", "310000", "370000")  # every known region and home
    assert query.holders == tuple(pseudonym(r, ID_NUMBER) for r in query.regions)
    one = _check(_tracing(store), regions=["310000"])
    assert one.holders == (pseudonym("310000", ID_NUMBER),)


def test_queries_are_counted_per_tracer_and_utc_day(store: SQLiteStore) -> None:
    tracing = _tracing(store, daily_quota=2)
    _check(tracing)
    _check(tracing)
    assert reason(lambda: _check(tracing)) == "RATE_LIMITED"
    assert reason(lambda: _check(tracing, tracer="cdc-qingdao")) == "OK"  # its own quota
    assert tracing.used("cdc-jinan", T0 + DAY) == 2
    next_day = T0 + 2 * DAY
    assert reason(lambda: _check(tracing, now=next_day)) == "OK"
    assert tracing.used("cdc-jinan", next_day) == 1


def test_the_audit_entry_of_a_query_holds_no_identifier_nor_pseudonym(
    store: SQLiteStore,
) -> None:
    query = _check(_tracing(store), tracer="cdc jinan/1")
    event = query.audit_event(T0 + DAY, 3, "OK")
    text = json.dumps([event.actor, event.action, event.after], ensure_ascii=False)
    assert ID_NUMBER not in text and not any(h in text for h in query.holders)
    assert event.actor == "tracer:cdc_jinan_1" and event.action == "trace.contacts"
    assert event.after == {
        "purpose": PURPOSE,
        "start": int(T0.timestamp()),
        "end": int((T0 + DAY).timestamp()),
        "regions": ["110000", "310000", "370000"],
        "results": 3,
        "outcome": "OK",
        "margin_seconds": 1800,
    }


def test_a_query_finding_too_much_is_refused_and_still_audited(
    loop: asyncio.AbstractEventLoop, store: SQLiteStore
) -> None:
    from keys.places import VisitEntry

    tracing = _tracing(store, max_results=2)
    query = replace(_check(tracing, kind="venues"), regions=("110000",))
    holder = query.holders[0]
    visits = [VisitEntry(T0 + i * timedelta(minutes=1), VENUE, holder, "recognised", "R")
              for i in range(3)]  # fmt: skip
    loop.run_until_complete(store.append_visits(visits))
    assert reason(lambda: loop.run_until_complete(tracing.visits(query, T0 + DAY))) == (
        "TRACE_RESULT_TOO_LARGE"
    )
    _, entries = loop.run_until_complete(store.read_audit(0, 100))
    (entry,) = [e for e in entries if e.action == "trace.venues"]
    assert entry.after is not None and entry.after["outcome"] == "TRACE_RESULT_TOO_LARGE"
    tracing.limits = TraceLimits(max_results=3)
    assert len(loop.run_until_complete(tracing.visits(query, T0 + DAY))) == 3
