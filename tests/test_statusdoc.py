"""The status document's format (keys/statusdoc.py, docs/partners.md §10): one JWS compact form
for both directions of the online wire. Unit tier: no sockets, fixed times."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from support.clock import T0

from gateway.codestatus import RateLimiter, claimed_code_id
from keys.crypto import Algorithm, PrivateKey, b64url_encode
from keys.errors import GatewayError
from keys.jsonutil import canonical_json
from keys.pseudonym import Pseudonymiser
from keys.statusdoc import StatusClaims, StatusDocument, sign_status

VALID = StatusClaims(
    "370000", "trustgw", "SD" + "a" * 30, "n" * 22, "valid", T0, 60,
    colour="green", holder_ref="r1-abc", valid_from=T0 - timedelta(hours=1),
    valid_until=T0 + timedelta(hours=5),
)  # fmt: skip
UNKNOWN = StatusClaims("370000", "trustgw", "SD" + "b" * 30, "n" * 22, "unknown", T0, 0)


def reason(call: Any) -> str:
    try:
        call()
    except GatewayError as exc:
        return exc.reason
    return "OK"


def jws(header: Any, payload: Any, key: PrivateKey) -> str:
    h = b64url_encode(canonical_json(header) if not isinstance(header, bytes) else header)
    p = b64url_encode(canonical_json(payload) if not isinstance(payload, bytes) else payload)
    return f"{h}.{p}.{b64url_encode(key.sign(f'{h}.{p}'.encode()))}"


@pytest.mark.parametrize("alg", [Algorithm.EDDSA, Algorithm.ES256, Algorithm.SM2])
def test_a_document_round_trips_with_each_algorithm_and_refuses_a_changed_byte(alg) -> None:
    if alg is Algorithm.SM2:
        pytest.importorskip("tongsuopy")
    key = PrivateKey.generate(alg)
    for claims in (VALID, UNKNOWN):
        text = sign_status(claims, "k-1", key)
        parsed = StatusDocument.parse(text)
        assert (parsed.alg, parsed.kid) == (alg, "k-1")
        assert parsed.verify(key.public_key()) == claims
        assert json.loads(parsed.payload) == claims.to_json()
    other = PrivateKey.generate(alg).public_key()
    assert reason(lambda: StatusDocument.parse(text).verify(other)) == "SIGNATURE_INVALID"


def test_the_key_must_be_of_the_header_algorithm() -> None:
    ed, p256 = PrivateKey.generate(Algorithm.EDDSA), PrivateKey.generate(Algorithm.ES256)
    text = sign_status(VALID, "k-1", ed)
    assert reason(lambda: StatusDocument.parse(text).verify(p256.public_key())) == "MALFORMED"


KEY = PrivateKey.generate(Algorithm.EDDSA)
GOOD_HEADER = {"alg": "EdDSA", "kid": "k-1", "typ": "trustgw-status+jwt"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(lambda: "a.b", "MALFORMED", id="two-parts"),
        pytest.param(lambda: "a.b.c.d", "MALFORMED", id="four-parts"),
        pytest.param(lambda: "x" * 20000, "OVERSIZED", id="oversized"),
        pytest.param(
            lambda: jws({**GOOD_HEADER, "alg": "none"}, VALID.to_json(), KEY),
            "ALGORITHM_UNSUPPORTED",
            id="alg-none",
        ),
        pytest.param(
            lambda: jws({**GOOD_HEADER, "alg": "PS256"}, VALID.to_json(), KEY),
            "ALGORITHM_UNSUPPORTED",
            id="alg-ps256",
        ),
        pytest.param(
            lambda: jws({**GOOD_HEADER, "typ": "JWT"}, VALID.to_json(), KEY),
            "MALFORMED",
            id="other-typ",
        ),
        pytest.param(
            lambda: jws({**GOOD_HEADER, "crit": ["x"]}, VALID.to_json(), KEY),
            "MALFORMED",
            id="extra-header-member",
        ),
        pytest.param(
            lambda: jws(b'{"alg":"EdDSA","alg":"EdDSA","kid":"k","typ":"t"}', VALID.to_json(), KEY),
            "MALFORMED",
            id="duplicate-member",
        ),
        pytest.param(lambda: jws(GOOD_HEADER, b"x" * 5000, KEY), "OVERSIZED", id="big-payload"),
    ],
)
def test_a_bad_document_is_refused_before_any_key_is_used(text, expected) -> None:
    assert reason(lambda: StatusDocument.parse(text())) == expected


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param({"v": 2}, "MALFORMED", id="other-version"),
        pytest.param({"extra": 1}, "MALFORMED", id="unknown-member"),
        pytest.param({"colour": None}, "MALFORMED", id="colour-not-text"),
        pytest.param({"status": "maybe"}, "MALFORMED", id="unknown-status"),
        pytest.param({"max_age": 3601}, "MALFORMED", id="max-age-too-long"),
        pytest.param({"max_age": True}, "MALFORMED", id="max-age-bool"),
        pytest.param({"checked_at": "2026-03-11T08:00:00+08:00"}, "MALFORMED", id="not-utc-z"),
        pytest.param({"region": "\uff13\uff170000"}, "MALFORMED", id="non-ascii-digits"),
        pytest.param({"valid_until": "2026-03-11T06:00:00Z"}, "MALFORMED", id="ends-first"),
    ],
)
def test_a_payload_outside_the_rules_is_malformed(change, expected) -> None:
    payload = {**VALID.to_json(), **change}
    text = jws(GOOD_HEADER, payload, KEY)
    parsed = StatusDocument.parse(text)
    assert reason(lambda: parsed.verify(KEY.public_key())) == expected


def test_an_unknown_status_states_nothing_about_the_code() -> None:
    with pytest.raises(ValueError):
        replace(UNKNOWN, colour="green")
    with pytest.raises(ValueError):
        replace(VALID, holder_ref=None)
    payload = {**UNKNOWN.to_json(), "colour": "green"}
    parsed = StatusDocument.parse(jws(GOOD_HEADER, payload, KEY))
    assert reason(lambda: parsed.verify(KEY.public_key())) == "MALFORMED"


def test_answers_are_checked_against_the_question() -> None:
    ok = {"region": "370000", "code_id": VALID.code_id, "nonce": VALID.nonce}
    skew = timedelta(minutes=5)
    assert reason(lambda: VALID.check_answers(**ok, now=T0, skew=skew)) == "OK"
    for name, value in (("region", "110000"), ("code_id", "SD" + "c" * 30), ("nonce", "m" * 22)):
        bad = {**ok, name: value}
        assert reason(lambda b=bad: VALID.check_answers(**b, now=T0, skew=skew)) == (
            "STATUS_MISMATCH"
        )
    early = T0 - timedelta(minutes=6)
    assert reason(lambda: VALID.check_answers(**ok, now=early, skew=skew)) == "STATUS_MISMATCH"
    kept = T0 + timedelta(seconds=60) + skew
    assert reason(lambda: VALID.check_answers(**ok, now=kept, skew=skew)) == "OK"
    stale = kept + timedelta(seconds=1)
    assert reason(lambda: VALID.check_answers(**ok, now=stale, skew=skew)) == "STATUS_MISMATCH"


def test_the_rate_limit_refills_with_the_injected_clock() -> None:
    clock = [100.0]
    limiter = RateLimiter(2.0, 2, clock=lambda: clock[0])
    limiter.take("110000")
    limiter.take("110000")
    assert reason(lambda: limiter.take("110000")) == "RATE_LIMITED"
    limiter.take("120000")  # one bucket per partner
    clock[0] += 0.5  # one call's worth at 2 a second
    limiter.take("110000")
    assert reason(lambda: limiter.take("110000")) == "RATE_LIMITED"


def test_a_home_code_text_names_its_id_only_within_limits() -> None:
    body = b64url_encode(json.dumps({"id": "SD" + "f" * 30}).encode())
    assert claimed_code_id(f"SD1:{body}.AA") == "SD" + "f" * 30
    assert reason(lambda: claimed_code_id("SD1:" + "A" * 5000 + ".AA")) == "OVERSIZED"
    assert reason(lambda: claimed_code_id(f"SD1:{body}")) == "MALFORMED"
    assert reason(lambda: claimed_code_id(f"SD1:{body}.AA.BB")) == "MALFORMED"
    deep = b64url_encode(b'{"id": ' + b"[" * 50 + b"]" * 50 + b"}")
    assert reason(lambda: claimed_code_id(f"SD1:{deep}.AA")) in ("OVERSIZED", "MALFORMED")


def test_holder_references_are_keyed_per_audience() -> None:
    pseudonymiser = Pseudonymiser(b"s" * 32)
    other = Pseudonymiser(b"t" * 32)
    ref = pseudonymiser.holder_ref("110000", "h1-abc")
    assert ref.startswith("r1-") and len(ref) <= 64
    assert ref == pseudonymiser.holder_ref("110000", "h1-abc")
    assert ref != pseudonymiser.holder_ref("120000", "h1-abc")
    assert ref != other.holder_ref("110000", "h1-abc")
