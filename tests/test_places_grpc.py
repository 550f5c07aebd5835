"""Place codes end to end, over mutual TLS, as the province's checkpoints and a tracer use them:
venues added and printed, their QR images read back; known people scanned at checkpoints with
the place codes (unary and stream); the tracer finds exactly the venues and the contacts; every
query audited with the tracer's name and purpose; no other role may trace (docs/api.md,
"Place codes and visits", "TracingService")."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from places_support import PURPOSE, TRACER, Outcome, add_venues, make_pki, scenario
from support.aio import run
from support.clock import REAL_NOW

from adapters.fields import id_check_digit
from adapters.regions import REGION_SPECS
from adapters.simulator import PartnerSimulator
from keys.model import Mode

pytestmark = pytest.mark.integration  # a real server (tests/support/tiers.py)

NOW = REAL_NOW  # a serving gateway reads the real clock
SHOW = next(s.code for s in REGION_SPECS if s.mode is Mode.SHOW)


def _id(first17: str) -> str:
    return first17 + id_check_digit(first17)


PEOPLE = {
    "a": (_id("11010119900307123"), "张三"),
    "b": (_id("31010419851224567"), "李四"),
    "c": (_id("44030519780615234"), "王五"),
    "d": (_id("37010219920101345"), "赵六"),
    "e": (_id("37020319881111456"), "钱七"),
}


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """One run of the scenario (a gateway, five people, five venues), read by every test."""
    from gateway.demo import prepare

    root = tmp_path_factory.mktemp("places")
    data_dir = root / "data"
    data_dir.mkdir()
    simulator = PartnerSimulator.generate()
    run(prepare(data_dir, simulator, NOW))
    venues = add_venues(data_dir, root)
    pki = make_pki(root / "pki", NOW)
    return run(scenario(data_dir, pki, simulator, SHOW, PEOPLE, NOW, venues))


def test_a_venues_qr_image_decodes_back_to_its_place_code(outcome: Outcome) -> None:
    for venue in outcome.venues.values():
        if "scanned" in venue:
            assert venue["scanned"] == venue["place_code"]


@pytest.mark.parametrize(
    ("scan", "recognised", "reason", "place_reason", "venue"),
    [
        pytest.param("a@mall", True, "RECOGNISED", "VISIT_RECORDED", "mall", id="green-at-mall"),
        pytest.param("e@mall", False, "NOT_GREEN", "VISIT_RECORDED", "mall", id="red-recorded"),
        pytest.param("forged@market", False, "SIGNATURE_INVALID", "VISIT_RECORDED", "market",
                     id="a-forged-code-still-records-the-visit"),
        pytest.param("b@closed", True, "RECOGNISED", "VENUE_DISABLED", None,
                     id="a-disabled-venue-records-nothing"),
        pytest.param("c@tampered", True, "RECOGNISED", "SIGNATURE_INVALID", None,
                     id="a-tampered-place-code-never-changes-the-decision"),
        pytest.param("c@nowhere", True, "RECOGNISED", "", None, id="no-place-code"),
        pytest.param("c@pharmacy", True, "RECOGNISED", "VISIT_RECORDED", "pharmacy",
                     id="in-a-stream"),
        pytest.param("d@late", True, "RECOGNISED", "VISIT_RECORDED", "late",
                     id="a-venue-added-while-serving"),
    ],
)  # fmt: skip
def test_a_scan_answers_the_holders_code_as_ever_and_the_place_code_beside_it(
    outcome: Outcome,
    scan: str,
    recognised: bool,
    reason: str,
    place_reason: str,
    venue: str | None,
) -> None:
    answer = outcome.scans[scan]
    assert (answer.request_id, answer.recognised, answer.reason) == (scan, recognised, reason)
    assert answer.place_reason == place_reason
    assert answer.venue_id == ("" if venue is None else outcome.venues[venue]["id"])
    assert bool(answer.place_message) == bool(place_reason)


def test_a_bad_request_in_the_stream_is_answered_in_its_place(outcome: Outcome) -> None:
    bad = outcome.scans["bad-in-stream"]
    assert (bad.recognised, bad.reason, bad.place_reason) == (False, "INVALID_REQUEST", "")


def test_the_tracer_finds_exactly_the_venues_a_person_visited(outcome: Outcome) -> None:
    visited = outcome.traced["venues:a"]
    ids = {key: v["id"] for key, v in outcome.venues.items()}
    # (Visits in the same second come by venue id: compare as sets.)
    assert sorted(v.venue_id for v in visited.visits) == sorted([ids["mall"], ids["pharmacy"]])
    names = {v.venue_id: v.venue_name for v in visited.visits}
    assert names == {ids["mall"]: "银座商城 泉城路店", ids["pharmacy"]: "漱玉平民大药房"}
    assert [v.at for v in visited.visits] == sorted(v.at for v in visited.visits)
    assert {v.holder for v in visited.visits} == {outcome.holders["a"]}
    assert list(visited.holders) == [outcome.holders["a"]]
    assert all(v.decision == "recognised" and v.reason == "RECOGNISED" for v in visited.visits)
    d_visits = sorted(v.venue_id for v in outcome.traced["venues:d"].visits)
    assert d_visits == sorted([ids["market"], ids["late"]])
    # Under another region's pseudonym the same person has no visits.
    assert list(outcome.traced["venues:a:other-region"].visits) == []


def test_the_tracer_finds_exactly_the_contacts(outcome: Outcome) -> None:
    contacts = outcome.traced["contacts:a"]
    ids = {key: v["id"] for key, v in outcome.venues.items()}
    found = {(c.holder, c.venue_id) for c in contacts.contacts}
    holders = outcome.holders
    assert found == {
        (holders["b"], ids["mall"]),
        (holders["e"], ids["mall"]),  # a red code is a contact too
        (holders["c"], ids["pharmacy"]),
    }
    assert holders["d"] not in {c.holder for c in contacts.contacts}  # another venue
    # d's only company at the market was a forged code: no holder, no contact.
    assert list(outcome.traced["contacts:d"].contacts) == []
    everyone = set(holders.values())
    for answer in outcome.traced.values():  # pseudonyms only: no name, no ID number
        text = str(answer)
        assert not any(n in text for id_number, name in PEOPLE.values() for n in (id_number, name))
        assert {c.holder for c in getattr(answer, "contacts", [])} <= everyone


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        pytest.param("window", grpc.StatusCode.INVALID_ARGUMENT, "TRACE_WINDOW_TOO_LONG",
                     id="window-too-long"),
        pytest.param("margin", grpc.StatusCode.INVALID_ARGUMENT, "TRACE_MARGIN_TOO_LONG",
                     id="margin-too-wide"),
        pytest.param("purpose", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST",
                     id="no-purpose"),
        pytest.param("purpose-with-id", grpc.StatusCode.INVALID_ARGUMENT,
                     "INVALID_REQUEST", id="an-id-number-as-purpose"),
        pytest.param("quota", grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED",
                     id="quota"),
        pytest.param("verifier:venues", grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED",
                     id="a-verifier-may-not-trace-venues"),
        pytest.param("verifier:contacts", grpc.StatusCode.PERMISSION_DENIED,
                     "PERMISSION_DENIED", id="a-verifier-may-not-trace-contacts"),
        pytest.param("operator:venues", grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED",
                     id="an-operator-may-not-trace-venues"),
        pytest.param("operator:contacts", grpc.StatusCode.PERMISSION_DENIED,
                     "PERMISSION_DENIED", id="an-operator-may-not-trace-contacts"),
        pytest.param("partner:venues", grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED",
                     id="a-partner-may-not-trace-venues"),
        pytest.param("partner:contacts", grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED",
                     id="a-partner-may-not-trace-contacts"),
        pytest.param("tracer:recognise", grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED",
                     id="a-tracer-is-no-checkpoint"),
    ],
)  # fmt: skip
def test_a_query_out_of_bounds_or_by_another_role_is_refused(
    outcome: Outcome, case: str, status: grpc.StatusCode, reason: str
) -> None:
    assert outcome.refused[case] == (status, reason)


def test_every_answered_query_is_audited_with_the_tracer_and_its_purpose(
    outcome: Outcome,
) -> None:
    audited = [(e.actor, e.action, e.after["purpose"], e.after["outcome"]) for e in outcome.audit]
    tracer = f"tracer:{TRACER}"
    assert audited == [
        (tracer, "trace.venues", PURPOSE, "OK"),
        (tracer, "trace.contacts", PURPOSE, "OK"),
        (tracer, "trace.venues", PURPOSE, "OK"),
        (tracer, "trace.contacts", PURPOSE, "OK"),
        (tracer, "trace.venues", PURPOSE, "OK"),
    ]
    pseudonyms = set(outcome.holders.values())
    for entry in outcome.audit:
        text = str(entry.after)
        assert not any(p in text for p in pseudonyms)
        assert not any(i in text for i, _ in PEOPLE.values())


def test_queries_and_scans_are_counted(outcome: Outcome) -> None:
    metrics: dict[str, Any] = outcome.metrics
    assert (metrics["venues:OK"], metrics["contacts:OK"]) == (3, 2)
    assert metrics["venues:TRACE_WINDOW_TOO_LONG"] == 1
    assert metrics["venues:RATE_LIMITED"] == 1
    assert metrics["scans:VISIT_RECORDED"] == 8  # a, a, b, c, d, d, e and the forged code
