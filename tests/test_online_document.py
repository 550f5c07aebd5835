"""Online codes, the pure half: the token grammar, the question and the signed status document
(docs/partners.md §9.1 to §9.5, §9.7). No I/O and no clock: every time is passed in."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.clock import T0

from adapters.online import (
    StatusQuestion,
    answer_body,
    cache_until,
    is_online_token,
    open_answer,
    parse_token,
    refusal,
    verify_status_document,
)
from adapters.regions import ADAPTERS, ONLINE_REGIONS, spec_for
from keys.crypto import Algorithm, PrivateKey
from keys.errors import (
    AlgorithmUnsupportedError,
    GatewayError,
    KeyRevokedError,
    KeyUnknownError,
    MalformedError,
    PartnerAnswerInvalidError,
    SignatureInvalidError,
)
from keys.jsonutil import canonical_json
from keys.model import KeyStatus, Region, RegionKey
from keys.registry import RegistrySnapshot
from keys.statusdoc import EXPIRED, REVOKED, UNKNOWN, VALID, StatusClaims, sign_status

BEIJING = spec_for("110000")
KEY = PrivateKey.generate(Algorithm.EDDSA)
OTHER = PrivateKey.generate(Algorithm.EDDSA)
KID = "bj-status-1"


def _snapshot(*keys: RegionKey) -> RegistrySnapshot:
    regions = [
        Region(code, ADAPTERS[code].spec.name, ADAPTERS[code].mode, timedelta(days=1))
        for code in ("110000", "500000")
    ]
    return RegistrySnapshot.build(1, regions, keys)


def _key(
    region: str = "110000", kid: str = KID, private: PrivateKey = KEY, **kw: object
) -> RegionKey:
    return RegionKey(
        region, kid, private.public_key(), T0 - timedelta(days=30), T0 + timedelta(days=30), **kw
    )  # type: ignore[arg-type]


SNAPSHOT = _snapshot(_key())
QUESTION = StatusQuestion("110000", "bjhc", "5f3a9c0e12d4b678", "q3Jc0hF8yWm4XbLr2sQp1A", T0)


def _document(**changes: object) -> StatusClaims:
    doc = StatusClaims(
        region="110000",
        issuer="bjhc",
        code_id="5f3a9c0e12d4b678",
        nonce=QUESTION.nonce,
        status=VALID,
        checked_at=T0,
        max_age=60,
        colour="green",
        holder_ref="bj-h-7Q2xK9",
        valid_from=T0,
        valid_until=T0 + timedelta(days=1),
    )
    return replace(doc, **changes)  # type: ignore[arg-type]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jws(
    header: dict[str, object], payload: dict[str, object] | bytes, key: PrivateKey = KEY
) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing = f"{_b64(json.dumps(header).encode())}.{_b64(raw)}"
    return f"{signing}.{_b64(key.sign(signing.encode()))}"


HEADER = {"alg": "EdDSA", "kid": KID, "typ": "trustgw-status+jwt"}


@pytest.mark.doc("partners.md §9.1")
@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        pytest.param("BJ1:ON1.bjhc.5f3a9c0e12d4b678", True, id="beijing"),
        pytest.param("CQJKM:ON1.cqjkm.Ab_-0123456789", True, id="chongqing"),
        pytest.param("BJ1:ON1.bjhc." + "a" * 64, True, id="code-id-64"),
        pytest.param("BJ1:ON1.bjhc." + "a" * 65, False, id="code-id-65"),
        pytest.param("BJ1:ON1.bjhc.1234567", False, id="code-id-7"),
        pytest.param("BJ1:ON1.other.5f3a9c0e12d4b678", False, id="issuer-not-the-regions"),
        pytest.param("BJ1:ON1.cqjkm.5f3a9c0e12d4b678", False, id="issuer-of-another-region"),
        pytest.param("BJ1:ON1.bjhc.5f3a9c0e12d4b678.x", False, id="trailing-part"),
        pytest.param("BJ1:ON1.bjhc.5f3a9c0e 12d4b678", False, id="space-inside"),
        pytest.param("BJ1:ON1.bjhc.5f3a9c0e12d4b67\uff18", False, id="non-ascii-digit"),
        pytest.param("BJ1:ON1.bjhc", False, id="no-code-id"),
    ],
)
def test_a_token_is_accepted_only_in_its_exact_grammar(text: str, accepted: bool) -> None:
    spec = BEIJING if text.startswith("BJ1:") else spec_for("500000")
    assert is_online_token(text, spec)
    if accepted:
        token = parse_token(text, spec)
        assert (token.region, text.endswith(token.code_id)) == (spec.code, True)
    else:
        with pytest.raises(MalformedError):
            parse_token(text, spec)


@pytest.mark.doc("partners.md §9.8")
def test_beijing_and_chongqing_are_the_online_regions_and_others_have_no_tokens() -> None:
    assert ONLINE_REGIONS == ("110000", "500000")
    assert not is_online_token("TJHC:ON1.tjhc.5f3a9c0e12d4b678", spec_for("120000"))
    assert not is_online_token("BJ1:6BFOXN", BEIJING)  # an offline code of the online region


@pytest.mark.doc("partners.md §9.2")
def test_the_request_is_canonical_json_and_parses_back_strictly() -> None:
    body = QUESTION.body()
    assert body == canonical_json(json.loads(body))
    assert json.loads(body)["asked_at"] == "2026-03-11T08:00:00Z"
    assert StatusQuestion.parse(body) == QUESTION
    for bad in (
        body.replace(b'"v":1', b'"v":2'),
        body.replace(b'"v":1', b'"v":1,"x":1'),
        body.replace(b"08:00:00Z", b"08:00:00+00:00"),
        body.replace(QUESTION.nonce.encode(), b"short"),
        b"x" * 5000,
    ):
        with pytest.raises(MalformedError):
            StatusQuestion.parse(bad)


@pytest.mark.doc("partners.md §9.4")
def test_a_signed_document_verifies_and_gives_back_its_members() -> None:
    document = sign_status(_document(), KID, KEY)
    parsed, key = verify_status_document(document, QUESTION, SNAPSHOT, T0)
    assert parsed == _document()
    assert key.kid == KID
    header = json.loads(base64.urlsafe_b64decode(document.split(".")[0] + "=="))
    assert header == HEADER


@pytest.mark.doc("partners.md §9.4")
def test_an_unknown_codes_document_holds_only_the_minimal_members() -> None:
    unknown = _document(
        status=UNKNOWN, colour=None, holder_ref=None, valid_from=None, valid_until=None
    )
    assert set(unknown.to_json()) == {
        "v",
        "region",
        "issuer",
        "code_id",
        "nonce",
        "status",
        "checked_at",
        "max_age",
    }
    parsed, _ = verify_status_document(sign_status(unknown, KID, KEY), QUESTION, SNAPSHOT, T0)
    assert parsed.status == UNKNOWN
    leaky = {**unknown.to_json(), "colour": "green"}
    with pytest.raises(PartnerAnswerInvalidError):
        verify_status_document(_jws(HEADER, leaky), QUESTION, SNAPSHOT, T0)


def _payload(**changes: object) -> dict[str, object]:
    payload = _document().to_json()
    for name, value in changes.items():
        if value is None:
            del payload[name]
        else:
            payload[name] = value
    return payload


@pytest.mark.doc("partners.md §9.5")
@pytest.mark.parametrize(
    ("document", "error"),
    [
        pytest.param(
            _jws({**HEADER, "typ": "JWT"}, _payload()), PartnerAnswerInvalidError, id="typ"
        ),
        pytest.param(
            _jws({**HEADER, "zip": "DEF"}, _payload()), PartnerAnswerInvalidError, id="extra-header"
        ),
        pytest.param(
            _jws({"alg": "none", "kid": KID, "typ": "trustgw-status+jwt"}, _payload()),
            AlgorithmUnsupportedError,
            id="alg-none",
        ),
        pytest.param(
            _jws({**HEADER, "alg": "ES256"}, _payload()),
            AlgorithmUnsupportedError,
            id="alg-not-the-keys",
        ),
        pytest.param(
            _jws({**HEADER, "kid": "nokey"}, _payload()), KeyUnknownError, id="kid-unknown"
        ),
        pytest.param(_jws(HEADER, _payload(), OTHER), SignatureInvalidError, id="badly-signed"),
        pytest.param(
            _jws(HEADER, _payload(nonce="AAAAAAAAAAAAAAAAAAAAAA")),
            PartnerAnswerInvalidError,
            id="wrong-nonce",
        ),
        pytest.param(
            _jws(HEADER, _payload(code_id="00000000000000")),
            PartnerAnswerInvalidError,
            id="another-code",
        ),
        pytest.param(
            _jws(HEADER, _payload(region="500000")), PartnerAnswerInvalidError, id="another-region"
        ),
        pytest.param(
            _jws(HEADER, _payload(checked_at="2026-03-11T07:58:59Z")),
            PartnerAnswerInvalidError,
            id="stale-checked-at",
        ),
        pytest.param(
            _jws(HEADER, _payload(checked_at="2026-03-11T08:01:01Z")),
            PartnerAnswerInvalidError,
            id="checked-in-the-future",
        ),
        pytest.param(
            _jws(HEADER, _payload(max_age=3601)), PartnerAnswerInvalidError, id="max-age-3601"
        ),
        pytest.param(
            _jws(HEADER, _payload(max_age=1.5)), PartnerAnswerInvalidError, id="max-age-float"
        ),
        pytest.param(
            _jws(HEADER, _payload(colour="Green")), PartnerAnswerInvalidError, id="colour-spelling"
        ),
        pytest.param(
            _jws(HEADER, _payload(holder_ref=None)), PartnerAnswerInvalidError, id="member-missing"
        ),
        pytest.param(
            _jws(HEADER, _payload(extra=1)), PartnerAnswerInvalidError, id="member-unknown"
        ),
        pytest.param(
            _jws(HEADER, _payload(holder_ref="王伟")),
            PartnerAnswerInvalidError,
            id="holder-ref-not-ascii",
        ),
        pytest.param(
            _jws(HEADER, _payload(valid_until="2026-03-11T08:00:00Z")),
            PartnerAnswerInvalidError,
            id="empty-validity",
        ),
        pytest.param(_jws(HEADER, _payload(v=2)), PartnerAnswerInvalidError, id="version"),
        pytest.param(
            _jws(HEADER, b'{"v":1,"v":1}'), PartnerAnswerInvalidError, id="duplicate-member"
        ),
        pytest.param(_jws(HEADER, b"[1]"), PartnerAnswerInvalidError, id="not-an-object"),
        pytest.param("a.b", PartnerAnswerInvalidError, id="two-parts"),
        pytest.param("!!.!!.!!", PartnerAnswerInvalidError, id="not-base64url"),
    ],
)
def test_every_bad_document_is_refused_with_its_stable_reason(
    document: str, error: type[GatewayError]
) -> None:
    with pytest.raises(error) as caught:
        verify_status_document(document, QUESTION, SNAPSHOT, T0)
    assert type(caught.value) is error


@pytest.mark.doc("partners.md §9.5")
def test_the_key_must_be_valid_and_not_revoked_at_checked_at() -> None:
    revoked = _snapshot(_key(status=KeyStatus.REVOKED, revoked_at=T0 - timedelta(hours=1)))
    document = sign_status(_document(), KID, KEY)
    with pytest.raises(KeyRevokedError):
        verify_status_document(document, QUESTION, revoked, T0)
    elsewhere = _snapshot(_key(region="500000"))  # the kid of another region never verifies
    with pytest.raises(KeyUnknownError):
        verify_status_document(document, QUESTION, elsewhere, T0)


@pytest.mark.doc("partners.md §9.3")
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b'{"status_document":"a.b.c","x":1}', id="extra-member"),
        pytest.param(b'{"status_document":1}', id="not-text"),
        pytest.param(b'{"status_document":"' + b"a" * 12289 + b'"}', id="document-too-long"),
        pytest.param(b'{"status_document":"' + b"a" * 16400 + b'"}', id="body-too-large"),
        pytest.param(b"\xff", id="not-utf8"),
    ],
)
def test_a_bad_answer_body_is_partner_answer_invalid(body: bytes) -> None:
    with pytest.raises(PartnerAnswerInvalidError):
        open_answer(body)


def test_the_answer_body_round_trips() -> None:
    document = sign_status(_document(), KID, KEY)
    assert open_answer(answer_body(document)) == document


@pytest.mark.doc("partners.md §9.5")
@pytest.mark.parametrize(
    ("changes", "now", "reason"),
    [
        pytest.param({}, T0, None, id="valid"),
        pytest.param({"status": REVOKED}, T0, "CODE_REVOKED", id="revoked"),
        pytest.param({"status": EXPIRED}, T0, "CODE_EXPIRED", id="expired"),
        pytest.param(
            {
                "status": UNKNOWN,
                "colour": None,
                "holder_ref": None,
                "valid_from": None,
                "valid_until": None,
            },
            T0,
            "CODE_UNKNOWN",
            id="unknown",
        ),
        pytest.param({}, T0 + timedelta(days=1, seconds=1), "CODE_EXPIRED", id="past-valid-until"),
        pytest.param(
            {"valid_from": T0 + timedelta(minutes=6), "valid_until": T0 + timedelta(days=1)},
            T0,
            "CODE_NOT_YET_VALID",
            id="valid-from-future",
        ),
    ],
)
def test_only_a_valid_status_inside_its_validity_is_honoured(
    changes: dict[str, object], now: datetime, reason: str | None
) -> None:
    error = refusal(_document(**changes), now)
    assert (error.reason if error else None) == reason


@pytest.mark.doc("partners.md §9.7")
@pytest.mark.parametrize(
    ("changes", "until"),
    [
        pytest.param({}, T0 + timedelta(seconds=60), id="max-age"),
        pytest.param({"max_age": 0}, None, id="max-age-0-never"),
        pytest.param(
            {"max_age": 3600, "valid_until": T0 + timedelta(seconds=30)},
            T0 + timedelta(seconds=30),
            id="never-past-valid-until",
        ),
        pytest.param(
            {"status": REVOKED, "max_age": 120},
            T0 + timedelta(seconds=120),
            id="revoked-cached-too",
        ),
    ],
)
def test_an_answer_is_cached_for_max_age_and_never_past_valid_until(
    changes: dict[str, object], until: datetime | None
) -> None:
    assert cache_until(_document(**changes), T0) == until


@pytest.mark.doc("partners.md §9.5")
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.text(max_size=300))
def test_no_answer_body_or_document_raises_anything_but_a_stable_reason(
    body: bytes, document: str
) -> None:
    """Whatever a partner sends, the checks end in one of the project's errors (a stable reason
    in the decision), never an unexpected exception."""
    for attempt in (
        lambda: open_answer(body),
        lambda: verify_status_document(document, QUESTION, SNAPSHOT, T0),
    ):
        try:
            attempt()
        except GatewayError:
            pass


@pytest.mark.doc("partners.md §9.5")
@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([*sorted(_document().to_json()), "x"]),
        st.one_of(st.integers(), st.text(max_size=40), st.booleans(), st.none()),
    )
)
def test_a_signed_payload_of_any_members_is_accepted_or_refused_with_a_reason(
    payload: dict[str, object],
) -> None:
    try:
        verify_status_document(_jws(HEADER, payload), QUESTION, SNAPSHOT, T0)
    except GatewayError as exc:
        assert exc.reason in {"PARTNER_ANSWER_INVALID", "KEY_NOT_VALID", "KEY_REVOKED"}
