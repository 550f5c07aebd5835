"""Attestations and converted home-province codes, verified offline with public keys only."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway import tokens
from gateway.claims import AttestationClaims, HomeCodeClaims, PartnerSource
from keys.crypto import PrivateKey, b64url_decode, b64url_encode
from keys.errors import (
    CodeExpiredError,
    CodeNotYetValidError,
    KeyNotValidError,
    KeyUnknownError,
    MalformedError,
    SignatureInvalidError,
)

NOW = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)


@pytest.fixture
def keys() -> dict[str, PrivateKey]:
    return {"attest": PrivateKey.generate(), "issue": PrivateKey.generate()}


@pytest.fixture
def trust(keys: dict[str, PrivateKey]) -> tokens.GatewayTrust:
    return tokens.GatewayTrust(
        "370000",
        tuple(
            tokens.TrustedKey(
                key.public_key().fingerprint(),
                role,
                key.public_key(),
                NOW - timedelta(days=10),
                NOW + timedelta(days=10),
            )
            for role, key in keys.items()
        ),
    )


def _attest(keys: dict[str, PrivateKey], **claims: Any) -> tokens.Attestation:
    base = AttestationClaims(
        region="110000",
        mode="show",
        holder="h1-x",
        colour="green",
        code_id="c1",
        code_kid="K1",
        code_iat=int(NOW.timestamp()) - 60,
        code_exp=int((NOW + timedelta(hours=2)).timestamp()),
        iat=int(NOW.timestamp()),
        exp=int((NOW + timedelta(hours=1)).timestamp()),
    )
    key = keys["attest"]
    return tokens.sign_attestation(replace(base, **claims), key.public_key().fingerprint(), key)


@pytest.mark.doc('verifying.md "Python API"')
def test_attestation_verifies_and_round_trips_through_json(keys, trust) -> None:
    att = _attest(keys)
    again = tokens.Attestation.from_json(json.dumps(att.to_json()))
    claims = tokens.verify_attestation(again, trust, NOW + timedelta(minutes=30))
    assert claims["holder"] == "h1-x"
    assert claims["typ"] == tokens.ATTESTATION_TYPE
    assert claims["iss"] == "370000"


@pytest.mark.doc('verifying.md "Attestation format"')
def test_attestation_payload_is_canonical_json(keys) -> None:
    att = _attest(keys)
    assert att.payload == tokens.canonical_json(json.loads(att.payload))


@pytest.mark.doc('verifying.md "Attestation format"')
@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        pytest.param(
            lambda a: tokens.Attestation(
                a.payload.replace(b"green", b"greem"), a.kid, a.alg, a.signature
            ),
            SignatureInvalidError,
            id="payload-edited",
        ),
        pytest.param(
            lambda a: tokens.Attestation(a.payload, a.kid, a.alg, bytes(64)),
            SignatureInvalidError,
            id="signature-zeroed",
        ),
        pytest.param(
            lambda a: tokens.Attestation(a.payload, "0" * 16, a.alg, a.signature),
            KeyUnknownError,
            id="unknown-kid",
        ),
        pytest.param(
            lambda a: tokens.Attestation(a.payload, a.kid, "ES256", a.signature),
            MalformedError,
            id="alg-swapped",
        ),
    ],
)
def test_tampered_attestation_is_refused(keys, trust, mutate, error) -> None:
    with pytest.raises(error):
        tokens.verify_attestation(mutate(_attest(keys)), trust, NOW)


@pytest.mark.doc('verifying.md "Attestation format"', 'verifying.md "The trust file"')
def test_attestation_signed_by_the_issue_key_is_not_an_attestation(keys, trust) -> None:
    key = keys["issue"]
    att = tokens.sign_attestation(
        AttestationClaims(
            "110000", "show", "h1-x", "green", "c1", "K1", 1, 2,
            iat=int(NOW.timestamp()), exp=int(NOW.timestamp()) + 60,
        ),
        key.public_key().fingerprint(),
        key,
    )  # fmt: skip
    with pytest.raises(KeyUnknownError):
        tokens.verify_attestation(att, trust, NOW)


def test_attestation_window_is_inclusive_and_enforced(keys, trust) -> None:
    att = _attest(keys)
    exp = NOW + timedelta(hours=1)
    tokens.verify_attestation(att, trust, NOW)
    tokens.verify_attestation(att, trust, exp)
    with pytest.raises(CodeExpiredError):
        tokens.verify_attestation(att, trust, exp + timedelta(seconds=1))
    with pytest.raises(CodeNotYetValidError):
        tokens.verify_attestation(att, trust, NOW - timedelta(seconds=1))


def test_attestation_from_a_key_outside_its_validity_is_refused(keys, trust) -> None:
    late = NOW + timedelta(days=20)
    att = _attest(keys, iat=int(late.timestamp()), exp=int(late.timestamp()) + 60)
    with pytest.raises(KeyNotValidError):
        tokens.verify_attestation(att, trust, late)


def _home(keys: dict[str, PrivateKey], **claims: Any) -> str:
    key = keys["issue"]
    base = HomeCodeClaims(
        id=tokens.home_code_id("110000", "c1"),
        holder="h1-x",
        colour="green",
        src=PartnerSource("110000", "c1"),
        src_iat=int(NOW.timestamp()) - 60,
        kid=key.public_key().fingerprint(),
        iat=int(NOW.timestamp()),
        exp=int((NOW + timedelta(hours=1)).timestamp()),
    )
    return tokens.sign_home_code(replace(base, **claims), key)


@pytest.mark.doc('verifying.md "Home-province code format"')
def test_home_code_verifies(keys, trust) -> None:
    code = _home(keys)
    assert code.startswith("SD1:")
    claims = tokens.verify_home_code(code, trust, NOW)
    assert claims["src"] == {"region": "110000", "code_id": "c1"}
    assert tokens.home_code_kid(code) == keys["issue"].public_key().fingerprint()


@pytest.mark.doc('verifying.md "Home-province code format"')
def test_home_code_id_is_stable_and_region_scoped() -> None:
    assert tokens.home_code_id("110000", "c1") == tokens.home_code_id("110000", "c1")
    assert tokens.home_code_id("110000", "c1") != tokens.home_code_id("120000", "c1")


@pytest.mark.doc('verifying.md "Home-province code format"')
def test_home_code_with_edited_payload_is_refused(keys, trust) -> None:
    code = _home(keys)
    body, sig = code[4:].split(".")
    payload = json.loads(b64url_decode(body))
    payload["colour"] = "green"
    payload["holder"] = "h1-someone-else"
    forged = "SD1:" + b64url_encode(tokens.canonical_json(payload)) + "." + sig
    with pytest.raises(SignatureInvalidError):
        tokens.verify_home_code(forged, trust, NOW)


@pytest.mark.doc('verifying.md "Home-province code format"', 'verifying.md "Python API"')
@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("SD1:", id="prefix-only"),
        pytest.param("SD1:abc", id="no-signature"),
        pytest.param("SD1:a.b.c", id="three-parts"),
        pytest.param("SD1:!!!.???", id="bad-base64"),
        pytest.param("XX1:abc.def", id="wrong-prefix"),
        pytest.param("SD1:" + "A" * 5000 + ".x", id="oversized"),
        pytest.param("SD1:" + b64url_encode(b"[" * 3000) + ".AAAA", id="deeply-nested"),
    ],
)
def test_malformed_home_codes_are_refused_with_a_reason(trust, text) -> None:
    with pytest.raises(MalformedError):
        tokens.verify_home_code(text, trust, NOW)


@pytest.mark.doc('verifying.md "The trust file"', 'verifying.md "Python API"')
def test_trust_file_round_trip(trust) -> None:
    again = tokens.GatewayTrust.from_json(json.dumps(trust.to_json()))
    assert again == trust


@pytest.mark.doc('verifying.md "The trust file"')
@pytest.mark.parametrize(
    "text",
    [
        pytest.param("not json", id="not-json"),
        pytest.param("{}", id="no-keys"),
        pytest.param('{"keys":[{"kid":"a"}]}', id="incomplete-key"),
        pytest.param(
            '{"keys":[{"kid":"a","role":"attest","alg":"HS256","public_key":"AA",'
            '"not_before":1700000000,"not_after":1800000000}]}',
            id="unknown-alg",
        ),
    ],
)
def test_bad_trust_files_are_refused(text) -> None:
    with pytest.raises(MalformedError):
        tokens.GatewayTrust.from_json(text)


def test_a_trust_file_key_status_is_one_of_three(trust) -> None:
    """docs/verifying.md, "The trust file": ``status`` absent means active; an unknown one is
    refused (a revoked key: tests/test_signed_outputs.py)."""
    document = trust.to_json()
    for key in document["keys"]:
        del key["status"]
    assert tokens.GatewayTrust.from_json(json.dumps(document)) == trust
    document["keys"][0]["status"] = "compromised"
    with pytest.raises(MalformedError):
        tokens.GatewayTrust.from_json(json.dumps(document))
