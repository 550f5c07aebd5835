"""Typed claims for what the gateway signs (gateway/claims.py): one class per signed output,
built in one place, written by ``to_json``, read back by ``from_json`` in the verifier
(docs/verifying.md lists the members)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway import tokens
from gateway.claims import (
    AttestationClaims,
    HomeCodeClaims,
    PartnerSource,
    ReceiptClaims,
    StockSource,
)
from keys.crypto import Algorithm, PrivateKey, b64url_encode
from keys.errors import MalformedError
from keys.jsonutil import canonical_json
from keys.records import SubmissionKind, SubmissionResult

NOW = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
T = int(NOW.timestamp())

ATTESTATION = AttestationClaims(
    region="110000",
    mode="convert",
    holder="h1-abc",
    colour="green",
    code_id="5f3a9c0e12d4b678",
    code_kid="K1",
    code_iat=T - 3600,
    code_exp=T + 86400,
    converted_code_id="SD0123",
    iat=T,
    exp=T + 3600,
)
HOME = HomeCodeClaims(
    id="SD0123",
    holder="h1-abc",
    colour="green",
    src=PartnerSource("110000", "5f3a9c0e12d4b678"),
    src_iat=T - 3600,
    kid="fb6a3ead78ad8591",
    iat=T,
    exp=T + 3600,
)
STOCK_HOME = HomeCodeClaims(
    id="SD4567",
    holder="h1-def",
    colour="yellow",
    src=StockSource("370100", "cert-1"),
    kid="fb6a3ead78ad8591",
    iat=T,
    exp=T + 7 * 86400,
)
RESULT = SubmissionResult(
    kind=SubmissionKind.KEYSET,
    region="110000",
    digest="ab" * 32,
    accepted_at=NOW,
    version=3,
    keys_added=("K2",),
    keys_kept=("K1",),
)
RECEIPT = ReceiptClaims.of(RESULT).with_validity(T, T + 86400)


def test_attestation_claims_are_the_members_verifying_md_lists() -> None:
    # The same members, values and so bytes as the payload the engine built by hand before.
    assert canonical_json(ATTESTATION.to_json()) == canonical_json(
        {
            "typ": "trustgw/attestation/v1",
            "iss": "370000",
            "region": "110000",
            "mode": "convert",
            "holder": "h1-abc",
            "colour": "green",
            "code_id": "5f3a9c0e12d4b678",
            "code_kid": "K1",
            "code_iat": T - 3600,
            "code_exp": T + 86400,
            "converted_code_id": "SD0123",
            "iat": T,
            "exp": T + 3600,
        }
    )
    show = dataclasses.replace(ATTESTATION, mode="show", converted_code_id=None)
    assert "converted_code_id" not in show.to_json()


def test_home_code_claims_name_their_source() -> None:
    # What the engine signs now: the region only (the source's code id may be an ID number).
    now_form = dataclasses.replace(HOME, src=PartnerSource("110000"))
    assert now_form.to_json()["src"] == {"region": "110000"}
    assert HomeCodeClaims.from_json(now_form.to_json()) == now_form
    # Codes signed before that named the source's code id too, and still read back.
    assert HOME.to_json()["src"] == {"region": "110000", "code_id": "5f3a9c0e12d4b678"}
    assert STOCK_HOME.to_json()["src"] == {"city": "370100", "certificate_id": "cert-1"}
    assert "src_iat" not in STOCK_HOME.to_json()  # a stock certificate has no source iat


def test_receipt_claims_carry_the_submission_receipt_fields() -> None:
    obj = RECEIPT.to_json()
    assert obj["typ"] == "trustgw/receipt/v1"
    assert (obj["kind"], obj["version"], obj["keys_added"], obj["revoked_at"]) == (
        "keyset",
        3,
        ["K2"],
        0,
    )


@pytest.mark.parametrize(
    "claims",
    [ATTESTATION, HOME, STOCK_HOME, RECEIPT],
    ids=["attestation", "home", "stock", "receipt"],
)
def test_claims_round_trip_through_json(claims: Any) -> None:
    assert type(claims).from_json(claims.to_json()) == claims


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        pytest.param(lambda o: {**o, "extra": 1}, "unknown member", id="unknown-member"),
        pytest.param(
            lambda o: {k: v for k, v in o.items() if k != "holder"}, "lacks", id="missing"
        ),
        pytest.param(lambda o: {**o, "holder": 7}, "not text", id="holder-not-text"),
        pytest.param(lambda o: {**o, "iat": "1"}, "whole number", id="iat-not-integer"),
        pytest.param(lambda o: {**o, "iat": True}, "whole number", id="iat-a-boolean"),
        pytest.param(lambda o: {**o, "typ": "trustgw/home-code/v1"}, "not a trustgw", id="typ"),
        pytest.param(lambda o: {**o, "iss": "110000"}, "not issued by", id="iss"),
    ],
)
def test_attestation_claims_that_are_not_the_format_are_malformed(mutate: Any, match: str) -> None:
    with pytest.raises(MalformedError, match=match):
        AttestationClaims.from_json(mutate(ATTESTATION.to_json()))


@pytest.mark.parametrize(
    "src",
    [{"code_id": "c1"}, {"city": "370100"}, {"region": "1", "code_id": "c", "x": 1}, "c1"],
    ids=["partner-no-region", "stock-missing", "unknown", "not-an-object"],
)
def test_a_home_code_source_that_is_not_one_of_the_two_forms_is_malformed(src: Any) -> None:
    with pytest.raises(MalformedError):
        HomeCodeClaims.from_json({**HOME.to_json(), "src": src})


def test_receipt_lists_and_flags_are_typed() -> None:
    with pytest.raises(MalformedError, match="list of text"):
        ReceiptClaims.from_json({**RECEIPT.to_json(), "keys_added": "K2"})
    with pytest.raises(MalformedError, match="true or false"):
        ReceiptClaims.from_json({**RECEIPT.to_json(), "duplicate": 0})


def test_claims_without_a_stated_window_are_never_signed() -> None:
    key = PrivateKey.generate(Algorithm.EDDSA)
    with pytest.raises(ValueError):
        tokens.sign_attestation(dataclasses.replace(ATTESTATION, iat=0, exp=0), "K", key)
    with pytest.raises(ValueError):
        tokens.sign_home_code(dataclasses.replace(HOME, kid=""), key)


@pytest.mark.doc('verifying.md "Python API"', 'verifying.md "Attestation format"')
def test_the_verifier_reads_the_payload_with_the_typed_claims() -> None:
    # A payload the gateway's key really signed but that is not the format: refused as
    # MALFORMED after the signature verified, never returned as claims.
    key = PrivateKey.generate(Algorithm.EDDSA)
    kid = key.public_key().fingerprint()
    trust = tokens.GatewayTrust(
        "370000",
        tuple(
            tokens.TrustedKey(
                kid, role, key.public_key(), NOW - timedelta(days=1), NOW + timedelta(days=30)
            )
            for role in ("attest", "issue")
        ),
    )
    payload = canonical_json({**ATTESTATION.to_json(), "admin": True})
    forged = tokens.Attestation(payload, kid, str(key.alg), key.sign(payload))
    with pytest.raises(MalformedError, match="unknown member"):
        tokens.verify_attestation(forged, trust, NOW)
    body = b64url_encode(
        canonical_json({**dataclasses.replace(HOME, kid=kid).to_json(), "holder": None})
    )
    code = f"SD1:{body}.{b64url_encode(key.sign(body.encode()))}"
    with pytest.raises(MalformedError, match="not text"):
        tokens.verify_home_code(code, trust, NOW)
    good = tokens.sign_attestation(ATTESTATION, kid, key)
    assert tokens.verify_attestation(good, trust, NOW) == ATTESTATION.to_json()


# --- trust lists (keys/trustclaims.py) ----------------------------------------------------------


def test_trust_list_claims_round_trip_and_refuse_what_is_not_the_format() -> None:
    from keys.trustclaims import (
        TrustListClaims,
        TrustListDeltaClaims,
        trustlist_claims_from_json,
    )

    full = TrustListClaims(2, "ab" * 32, {"regions": [], "keys": []}).with_validity(T, T + 600)
    delta = TrustListDeltaClaims(3, 2, "cd" * 32, [], [], []).with_validity(T, T + 600)
    for claims in (full, delta):
        assert trustlist_claims_from_json(claims.to_json()) == claims
    with pytest.raises(MalformedError, match="unknown member"):
        trustlist_claims_from_json({**full.to_json(), "extra": 1})
    with pytest.raises(MalformedError, match="not an object"):
        trustlist_claims_from_json({**full.to_json(), "content": []})
    with pytest.raises(MalformedError, match="are lists"):
        trustlist_claims_from_json({**delta.to_json(), "removed": {}})
    with pytest.raises(MalformedError, match="not a trust list"):
        trustlist_claims_from_json({**full.to_json(), "type": "trustgw/receipt/v1"})
    with pytest.raises(ValueError):
        TrustListClaims(2, "ab" * 32, {}).to_json()  # no window stated: never signed
