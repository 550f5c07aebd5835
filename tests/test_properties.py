"""Every decoder, fed arbitrary and mutated input, raises only the project's own errors, fast.

Decoders: base45, zlib / raw DEFLATE, CBOR, JSON, the tolerant DER certificate reader and key
loader, COSE_Sign1, JWS, HC1 (whole verification), SHC input forms and verification, and each
partner region's adapter. "Only the project's errors" means any exception is a
:class:`keys.errors.GatewayError`; a deadline per example and bounded inputs keep it fast, and the
decoders' own size limits keep memory bounded (a bomb must end in OversizedError).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from credentials_support import (
    EKU_VACCINATION,
    certificate,
    dcc_claims,
    dcc_code,
    kid_of,
    numeric,
    numeric_chunks,
    shc_card,
    shc_issuer,
    shc_payload,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.base import Colour
from adapters.codecs.encoding import (
    b45decode,
    b45encode,
    inflate,
    parse_cbor,
    parse_json,
)
from adapters.credentials import check, hc1, json_safe, shc
from adapters.credentials import region as region_format
from adapters.regions import ADAPTERS
from adapters.simulator import PartnerIssuer
from keys.crypto import PrivateKey, b64url_decode, load_public_key
from keys.der import read_certificate
from keys.errors import GatewayError, OversizedError
from keys.pseudonym import Pseudonymiser

# TRUSTGW_PROPERTY_EXAMPLES=5000 for a deeper run; the default keeps the suite fast.
PROPS = settings(
    max_examples=int(os.environ.get("TRUSTGW_PROPERTY_EXAMPLES", "60")),
    deadline=timedelta(milliseconds=1500),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize="TRUSTGW_PROPERTY_EXAMPLES" not in os.environ,
)

ES_KEY = PrivateKey.from_p256_scalar(b"\x07" * 32)
CERT = certificate(ES_KEY, [EKU_VACCINATION])
TRUST = hc1.DccTrust((hc1.Signer.from_certificate(CERT),))
T0 = 1_622_548_800
AT = datetime.fromtimestamp(T0, UTC)
HC1_CODE = dcc_code(ES_KEY, dcc_claims(T0 - 60, T0 + 60), kid=kid_of(CERT), tags=(61, 18))
HC1_COSE = zlib.decompress(b45decode(HC1_CODE[4:], limit=9999))

SHC_KEY, SHC_JWK = shc_issuer(b"properties")
SHC_KEYS = shc.IssuerKeys.from_jwks(json.dumps({"keys": [SHC_JWK]}).encode())
SHC_CRL = shc.RevocationList(SHC_JWK["kid"], 1, {"r1": (None,)})
SHC_JWS = shc_card(SHC_KEY, SHC_JWK["kid"], shc_payload(T0 - 60, exp=T0 + 60, rid="r2"))
SHC_PAYLOAD = zlib.decompress(b64url_decode(SHC_JWS.split(".")[1]), -15)

PSEUDONYMISE = Pseudonymiser(b"properties-pseudonym-secret-0123")


def only_project_errors(decode: Callable[[], Any]) -> None:
    """Run ``decode``; returning or raising a GatewayError is fine, anything else fails."""
    try:
        decode()
    except GatewayError:
        pass


# --- mutation strategies ----------------------------------------------------------------------


@st.composite
def mutated_bytes(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate"]))
        if not data:
            data += draw(st.binary(min_size=1, max_size=8))
            continue
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "truncate":
            del data[at:]
        else:
            end = min(len(data), at + draw(st.integers(1, 32)))
            data[at:at] = data[at:end]
    return bytes(data)


@st.composite
def mutated_text(draw: st.DrawFn, seed: str, alphabet: str) -> str:
    text = list(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "delete", "insert", "truncate", "swap"]))
        if not text:
            text.append(draw(st.sampled_from(alphabet)))
            continue
        at = draw(st.integers(0, len(text) - 1))
        if kind == "replace":
            text[at] = draw(st.sampled_from(alphabet))
        elif kind == "delete":
            del text[at : at + draw(st.integers(1, 8))]
        elif kind == "insert":
            text[at:at] = draw(st.lists(st.sampled_from(alphabet), min_size=1, max_size=8))
        elif kind == "truncate":
            del text[at:]
        else:
            other = draw(st.integers(0, len(text) - 1))
            text[at], text[other] = text[other], text[at]
    return "".join(text)


B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
DIGITS = "0123456789/:shc\n"
ANY_TEXT = st.text(max_size=600)


# --- generic decoders -------------------------------------------------------------------------


@PROPS
@given(st.one_of(ANY_TEXT, st.text(alphabet=B45, max_size=600)))
def test_base45_arbitrary_text(text: str) -> None:
    only_project_errors(lambda: b45decode(text, limit=4096))


@PROPS
@given(st.binary(max_size=300))
def test_base45_round_trip(data: bytes) -> None:
    assert b45decode(b45encode(data), limit=4096) == data


@PROPS
@given(st.one_of(st.binary(max_size=400), mutated_bytes(zlib.compress(b"x" * 5000))))
def test_inflate_arbitrary_and_mutated(data: bytes) -> None:
    only_project_errors(lambda: inflate(data, raw=False, limit=1024))
    only_project_errors(lambda: inflate(data, raw=True, limit=1024))


def test_inflate_bombs_stop_at_the_limit() -> None:
    for raw in (False, True):
        deflater = zlib.compressobj(9, zlib.DEFLATED, -15 if raw else 15)
        bomb = deflater.compress(bytes(50_000_000)) + deflater.flush()
        with pytest.raises(OversizedError):
            inflate(bomb, raw=raw, limit=64 * 1024)


@PROPS
@given(st.one_of(st.binary(max_size=400), mutated_bytes(HC1_COSE)))
def test_cbor_arbitrary_and_mutated(data: bytes) -> None:
    def decode() -> None:
        json_safe(parse_cbor(data))

    only_project_errors(decode)


@PROPS
@given(
    st.one_of(
        st.binary(max_size=400),
        ANY_TEXT.map(str.encode),
        mutated_bytes(b'{"a":[1,{"b":2.5e3}],"c":"\\u00e9"}'),
    )
)
def test_json_arbitrary_and_mutated(data: bytes) -> None:
    only_project_errors(lambda: parse_json(data))


@PROPS
@given(st.one_of(st.binary(max_size=600), mutated_bytes(CERT)))
def test_der_certificate_reader_and_key_loader(data: bytes) -> None:
    only_project_errors(lambda: read_certificate(data))
    only_project_errors(lambda: load_public_key(data))
    only_project_errors(lambda: hc1.Signer.from_certificate(data))


# --- COSE / HC1 -------------------------------------------------------------------------------


@PROPS
@given(st.one_of(st.binary(max_size=400), mutated_bytes(HC1_COSE)))
def test_cose_message_arbitrary_and_mutated(data: bytes) -> None:
    only_project_errors(lambda: hc1.CODEC.open_message(data))


@PROPS
@given(
    st.one_of(
        ANY_TEXT,
        mutated_text(HC1_CODE, B45),
        st.text(alphabet=B45, max_size=600).map(lambda t: "HC1:" + t),
    )
)
def test_hc1_arbitrary_and_mutated(text: str) -> None:
    only_project_errors(lambda: hc1.verify(text, TRUST, AT))


@PROPS
@given(mutated_bytes(HC1_COSE))
def test_hc1_mutated_cose_recompressed(data: bytes) -> None:
    """Mutations below the compression layer reach the COSE and CWT steps."""
    code = "HC1:" + b45encode(zlib.compress(data))
    verdict = check(lambda seen: hc1.verify(code, TRUST, AT, seen), "ok")
    if verdict.accepted:  # only mutations the signature does not cover may still verify
        assert verdict.claims["-260"]


# --- JWS / SHC --------------------------------------------------------------------------------


@PROPS
@given(st.one_of(ANY_TEXT, mutated_text(SHC_JWS, B64URL)))
def test_jws_and_shc_arbitrary_and_mutated(text: str) -> None:
    only_project_errors(lambda: shc.CODEC.open(text))
    only_project_errors(lambda: shc.verify(text, SHC_KEYS, [SHC_CRL], AT))


@PROPS
@given(
    st.one_of(
        mutated_text("shc:/" + numeric(SHC_JWS), DIGITS),
        mutated_text("\n".join(numeric_chunks(SHC_JWS, 3)), DIGITS),
        st.text(alphabet=DIGITS, max_size=600).map(lambda t: "shc:/" + t),
    )
)
def test_shc_numeric_arbitrary_and_mutated(text: str) -> None:
    only_project_errors(lambda: shc.cards(text))
    only_project_errors(lambda: shc.verify(text, SHC_KEYS, [SHC_CRL], AT))


@PROPS
@given(mutated_bytes(SHC_PAYLOAD))
def test_shc_signed_arbitrary_payloads(payload: bytes) -> None:
    """Whatever a trusted issuer signs, the payload steps refuse it with a project error."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    jws = shc_card(
        SHC_KEY, SHC_JWK["kid"], None, raw_payload=deflater.compress(payload) + deflater.flush()
    )
    only_project_errors(lambda: shc.verify(jws, SHC_KEYS, [SHC_CRL], AT))


@PROPS
@given(st.one_of(st.binary(max_size=400), mutated_bytes(json.dumps({"keys": [SHC_JWK]}).encode())))
def test_trust_files_fail_as_value_errors(data: bytes) -> None:
    """A bad trust file is a usage error: ValueError (never another exception)."""
    for load in (
        shc.IssuerKeys.from_jwks,
        shc.RevocationList.from_json,
        hc1.DccTrust.from_bytes,
        lambda d: region_format.PartnerKeys.from_bytes("110000", d),
    ):
        try:
            load(data)
        except ValueError:
            pass


# --- partner regions --------------------------------------------------------------------------

ISSUERS = {code: PartnerIssuer.generate(code, kid=f"k-{code}") for code in sorted(ADAPTERS)}
REGION_AT = datetime(2024, 5, 1, 12, tzinfo=UTC)
REGION_CODES = {
    code: issuer.issue(
        holder_id="110101199003070011",
        holder_name="王伟",
        colour=Colour.GREEN,
        issued_at=REGION_AT - timedelta(hours=1),
        expires_at=REGION_AT + timedelta(hours=1),
    )
    for code, issuer in ISSUERS.items()
}
REGION_ALPHABET = B45 + B64URL.lower() + '{}":,|;'


@pytest.mark.parametrize("region", sorted(ADAPTERS))
def test_region_adapters_arbitrary_and_mutated(region: str) -> None:
    issuer = ISSUERS[region]
    window = (REGION_AT - timedelta(days=9), REGION_AT + timedelta(days=9))
    keys = region_format.PartnerKeys((issuer.region_key(*window),))
    code = REGION_CODES[region]
    assert region_format.verify(region, code, keys, REGION_AT)["region"] == region

    @PROPS
    @given(st.one_of(ANY_TEXT, mutated_text(code, REGION_ALPHABET)))
    def run(text: str) -> None:
        only_project_errors(lambda: ADAPTERS[region].decode(text, keys, PSEUDONYMISE))
        only_project_errors(lambda: region_format.verify(region, text, keys, REGION_AT))

    run()
