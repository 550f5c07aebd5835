"""The three envelope families, family by family: what each accepts and what it refuses.

Codes are crafted by hand here (valid signatures around hostile structure), so that each refusal
is proven to come from the envelope check and not from a failed signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
import pytest
from support import conformance

from adapters.codecs.compact import CompactCodec, DelimitedPayload, JsonPayload
from adapters.codecs.cose import CoseCodec, CoseTag, KidForm, sig_structure
from adapters.codecs.encoding import (
    Compression,
    TextEncoding,
    b45encode,
    b64url_encode,
    deflate,
    dump_cbor,
    dump_json,
)
from adapters.codecs.jws import JwsCodec
from adapters.regions import ADAPTERS
from adapters.simulator import InMemoryKeys
from keys.crypto import Algorithm, PrivateKey, load_public_key
from keys.errors import (
    AlgorithmUnsupportedError,
    ForeignDataError,
    MalformedError,
    OversizedError,
    SignatureInvalidError,
)
from keys.model import RegionKey
from keys.pseudonym import Pseudonymiser

# Also runs with every dependency at its floor (.ci/lowest-versions).
pytestmark = pytest.mark.lowest

NOW = datetime(2020, 3, 11, 8, tzinfo=UTC)
PSEUDONYMISE = Pseudonymiser(b"envelope-tests-pseudonym-secret!")
ED_KEY = PrivateKey.from_ed25519_seed(hashlib.sha256(b"trustgw-test-envelopes-ed").digest())
P256_KEY = PrivateKey.from_p256_scalar(hashlib.sha256(b"trustgw-test-envelopes-p256").digest())


def lookup(region: str, key: PrivateKey, kid: str = "k1") -> InMemoryKeys:
    return InMemoryKeys.of(
        [RegionKey(region, kid, key.public_key(), NOW - timedelta(days=1), NOW + timedelta(days=1))]
    )


def claims_of(region: str) -> dict[Any, Any]:
    from adapters.base import Colour

    return ADAPTERS[region].spec.fields.build(
        holder_id="110101199003070011",
        holder_name="王伟",
        colour=Colour.GREEN,
        issued_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        code_id="abcd",
    )


# --- family (b): JWS --------------------------------------------------------------------------

SICHUAN = ADAPTERS["510000"]  # JWS, EdDSA, no zip
HENAN = ADAPTERS["410000"]  # JWS, ES256, zip DEF


def jws(prefix: str, header: Any, payload: bytes, key: PrivateKey) -> str:
    head = b64url_encode(header if isinstance(header, bytes) else dump_json(header))
    signing_input = f"{head}.{b64url_encode(payload)}"
    return f"{prefix}{signing_input}.{b64url_encode(key.sign(signing_input.encode()))}"


@pytest.mark.doc("partners.md §3")
@pytest.mark.parametrize(
    ("header", "error"),
    [
        pytest.param({"alg": "none", "kid": "k1"}, AlgorithmUnsupportedError, id="alg-none"),
        pytest.param({"alg": "None", "kid": "k1"}, AlgorithmUnsupportedError, id="alg-None"),
        pytest.param({"alg": "HS256", "kid": "k1"}, AlgorithmUnsupportedError, id="alg-hs256"),
        pytest.param({"alg": "RS256", "kid": "k1"}, AlgorithmUnsupportedError, id="alg-rs256"),
        pytest.param(
            {"alg": "ES256", "kid": "k1"}, AlgorithmUnsupportedError, id="alg-not-the-regions"
        ),
        pytest.param(
            {"alg": "PS256", "kid": "k1"}, AlgorithmUnsupportedError, id="alg-ps256-not-allowed"
        ),
        pytest.param({"alg": "eddsa", "kid": "k1"}, AlgorithmUnsupportedError, id="alg-wrong-case"),
        pytest.param({"kid": "k1"}, MalformedError, id="alg-missing"),
        pytest.param({"alg": ["EdDSA"], "kid": "k1"}, MalformedError, id="alg-not-text"),
        pytest.param({"alg": "EdDSA"}, MalformedError, id="kid-missing"),
        pytest.param({"alg": "EdDSA", "kid": 1}, MalformedError, id="kid-not-text"),
        pytest.param({"alg": "EdDSA", "kid": ""}, MalformedError, id="kid-empty"),
        pytest.param({"alg": "EdDSA", "kid": "k" * 129}, MalformedError, id="kid-too-long"),
        pytest.param({"alg": "EdDSA", "kid": "k1", "crit": ["exp"]}, MalformedError, id="crit"),
        pytest.param({"alg": "EdDSA", "kid": "k1", "b64": False}, MalformedError, id="b64-false"),
        pytest.param(
            {"alg": "EdDSA", "kid": "k1", "jwk": {"kty": "OKP"}}, MalformedError, id="embedded-jwk"
        ),
        pytest.param(
            {"alg": "EdDSA", "kid": "k1", "zip": "DEF"}, MalformedError, id="zip-where-not-used"
        ),
        pytest.param(["EdDSA", "k1"], MalformedError, id="header-array"),
        pytest.param(
            b'{"alg":"EdDSA","kid":"k1","kid":"k2"}', MalformedError, id="header-duplicate-kid"
        ),
        pytest.param(b"not json", MalformedError, id="header-not-json"),
        pytest.param(b'{"a":' * 5 + b"1" + b"}" * 5, ForeignDataError, id="header-too-deep"),
        pytest.param(
            b'{"alg":"EdDSA","kid":"k1","x":"' + b"x" * 1100 + b'"}',
            ForeignDataError,
            id="header-too-long",
        ),
    ],
)
def test_jws_header_checks(header: Any, error: type[Exception]) -> None:
    code = jws("SCTFM:", header, dump_json(claims_of("510000")), ED_KEY)
    with pytest.raises(error):
        SICHUAN.decode(code, lookup("510000", ED_KEY), PSEUDONYMISE)


def test_jws_well_formed_header_with_extra_members_is_accepted() -> None:
    header = {"alg": "EdDSA", "kid": "k1", "typ": "JWT", "cty": "x"}
    code = jws("SCTFM:", header, dump_json(claims_of("510000")), ED_KEY)
    assert SICHUAN.decode(code, lookup("510000", ED_KEY), PSEUDONYMISE).status.code_id == "abcd"


@pytest.mark.doc("partners.md §3")
@pytest.mark.parametrize(
    ("header", "payload", "error"),
    [
        pytest.param({"alg": "ES256", "kid": "k1"}, b"{}", MalformedError, id="zip-missing"),
        pytest.param(
            {"alg": "ES256", "kid": "k1", "zip": "GZIP"}, b"{}", MalformedError, id="zip-unknown"
        ),
        pytest.param(
            {"alg": "ES256", "kid": "k1", "zip": "DEF"},
            b"{}",
            MalformedError,
            id="payload-not-deflated",
        ),
        pytest.param(
            {"alg": "ES256", "kid": "k1", "zip": "DEF"},
            deflate(bytes(10_000_000), raw=True),
            OversizedError,
            id="deflate-bomb",
        ),
        pytest.param(
            {"alg": "ES256", "kid": "k1", "zip": "DEF"},
            deflate(b"[" * 40 + b"]" * 40, raw=True),
            OversizedError,
            id="deep-json",
        ),
        pytest.param(
            {"alg": "ES256", "kid": "k1", "zip": "DEF"},
            deflate(b'["not an object"]', raw=True),
            MalformedError,
            id="claims-array",
        ),
        pytest.param(
            {"alg": "ES256", "kid": "k1", "zip": "DEF"},
            deflate(dump_json({"jti": "x"}), raw=True) + b"x",
            MalformedError,
            id="deflate-trailing-garbage",
        ),
    ],
)
def test_jws_zip_def_payloads_are_inflated_with_bounds(
    header: Any, payload: bytes, error: type[Exception]
) -> None:
    code = jws("YU:", header, payload, P256_KEY)
    with pytest.raises(error):
        HENAN.decode(code, lookup("410000", P256_KEY), PSEUDONYMISE)


@pytest.mark.doc("partners.md §3")
@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda c: c + ".x", id="four-parts"),
        pytest.param(lambda c: c.rsplit(".", 1)[0], id="two-parts"),
        pytest.param(lambda c: c.rsplit(".", 1)[0] + ".", id="empty-signature"),
        pytest.param(lambda c: c[:-3], id="short-signature"),
        pytest.param(lambda c: c.replace(".", "..", 1), id="empty-payload-part"),
        pytest.param(lambda c: c + "=", id="padded-signature"),
        pytest.param(
            lambda c: c[:-1] + ("B" if c[-1] != "B" else "C"), id="non-canonical-last-char"
        ),
    ],
)
def test_jws_structure_errors(mutate: Any) -> None:
    code = jws("SCTFM:", {"alg": "EdDSA", "kid": "k1"}, dump_json(claims_of("510000")), ED_KEY)
    with pytest.raises(ForeignDataError):
        SICHUAN.decode(mutate(code), lookup("510000", ED_KEY), PSEUDONYMISE)


def test_jws_ed25519_signature_of_wrong_length_is_a_signature_failure() -> None:
    head = b64url_encode(dump_json({"alg": "EdDSA", "kid": "k1"}))
    body = b64url_encode(dump_json(claims_of("510000")))
    code = f"SCTFM:{head}.{body}.{b64url_encode(bytes(63))}"
    with pytest.raises(SignatureInvalidError):
        SICHUAN.decode(code, lookup("510000", ED_KEY), PSEUDONYMISE)


# --- family (c): COSE -------------------------------------------------------------------------

HEBEI = ADAPTERS["130000"]  # COSE, EdDSA, base45, zlib, tag 18


def cose_code(
    message: Any,
    *,
    prefix: str = "HE1:",
    compress: bool = True,
) -> str:
    data = dump_cbor(message) if not isinstance(message, bytes) else message
    return prefix + b45encode(deflate(data, raw=False) if compress else data)


def sign1(
    protected: dict[int, Any] | bytes,
    unprotected: dict[int, Any],
    claims: Any,
    key: PrivateKey = ED_KEY,
    tags: tuple[int, ...] = (18,),
) -> Any:
    protected_bytes = protected if isinstance(protected, bytes) else dump_cbor(protected)
    payload = claims if isinstance(claims, bytes) else dump_cbor(claims)
    message: Any = [
        protected_bytes,
        unprotected,
        payload,
        key.sign(sig_structure(protected_bytes, payload)),
    ]
    for tag in reversed(tags):
        message = cbor2.CBORTag(tag, message)
    return message


@pytest.mark.doc("partners.md §4")
@pytest.mark.parametrize(
    ("protected", "unprotected", "tags"),
    [
        pytest.param({1: -8, 4: b"k1"}, {}, (18,), id="tag-18-kid-protected"),
        pytest.param({1: -8, 4: b"k1"}, {}, (61, 18), id="cwt-tag-61-around-18"),
        pytest.param({1: -8, 4: b"k1"}, {}, (), id="untagged"),
        pytest.param({1: -8}, {4: b"k1"}, (18,), id="kid-unprotected"),
        pytest.param({4: b"k1"}, {1: -8}, (18,), id="alg-unprotected"),
        pytest.param(b"", {1: -8, 4: b"k1"}, (18,), id="empty-protected"),
        pytest.param({1: -8, 4: b"k1"}, {4: b"other", 1: -7}, (18,), id="protected-wins"),
        pytest.param({1: -8}, {}, (18,), id="no-kid-tries-region-keys"),
    ],
)
def test_cose_accepts_the_real_world_layouts(
    protected: dict[int, Any] | bytes, unprotected: dict[int, Any], tags: tuple[int, ...]
) -> None:
    code = cose_code(sign1(protected, unprotected, claims_of("130000"), tags=tags))
    status = HEBEI.decode(code, lookup("130000", ED_KEY), PSEUDONYMISE).status
    assert status.code_id == "abcd"


@pytest.mark.doc("partners.md §4")
@pytest.mark.parametrize(
    ("message", "error"),
    [
        pytest.param(
            sign1({1: -8, 4: b"k1"}, {}, {}, tags=(98,)), MalformedError, id="tag-98-cose-sign"
        ),
        pytest.param(
            sign1({1: -8, 4: b"k1"}, {}, {}, tags=(61,)), MalformedError, id="tag-61-without-18"
        ),
        pytest.param(
            sign1({1: -8, 4: b"k1"}, {}, {}, tags=(18, 18)), MalformedError, id="tag-18-twice"
        ),
        pytest.param([b"", {}, b""], MalformedError, id="three-items"),
        pytest.param({"a": 1}, MalformedError, id="a-map"),
        pytest.param([{1: -8}, {}, b"", b""], MalformedError, id="protected-not-bstr"),
        pytest.param([dump_cbor([1]), {}, b"", b""], MalformedError, id="protected-not-a-map"),
        pytest.param(
            [dump_cbor({1: -8}), [], b"", b""], MalformedError, id="unprotected-not-a-map"
        ),
        pytest.param([dump_cbor({1: -8}), {}, None, b""], MalformedError, id="detached-payload"),
        pytest.param([dump_cbor({1: -8}), {}, b"", "sig"], MalformedError, id="signature-text"),
        pytest.param(sign1({1: -8, 2: [1], 4: b"k1"}, {}, {}), MalformedError, id="crit"),
        pytest.param(sign1({4: b"k1"}, {}, {}), MalformedError, id="alg-missing"),
        pytest.param(sign1({1: -35, 4: b"k1"}, {}, {}), AlgorithmUnsupportedError, id="alg-es384"),
        pytest.param(
            sign1({1: -37, 4: b"k1"}, {}, {}), AlgorithmUnsupportedError, id="alg-ps256-not-allowed"
        ),
        pytest.param(
            sign1({1: -7, 4: b"k1"}, {}, {}),
            AlgorithmUnsupportedError,
            id="alg-es256-not-the-regions",
        ),
        pytest.param(
            sign1({1: "EdDSA", 4: b"k1"}, {}, {}), AlgorithmUnsupportedError, id="alg-text"
        ),
        pytest.param(sign1({1: -8, 4: "k1"}, {}, {}), MalformedError, id="kid-text"),
        pytest.param(sign1({1: -8, 4: b""}, {}, {}), MalformedError, id="kid-empty"),
        pytest.param(sign1({1: -8, 4: b"\xff\xfe"}, {}, {}), MalformedError, id="kid-not-ascii"),
        pytest.param(sign1({1: -8, 4: b"k1"}, {}, [1, 2]), MalformedError, id="claims-not-a-map"),
        pytest.param(
            sign1({1: -8, 4: b"k1"}, {}, b"\xa1\x01"), MalformedError, id="claims-truncated"
        ),
        pytest.param(
            sign1({1: -8, 4: b"k1"}, {}, dump_cbor({1: 1}) + b"\x00"),
            MalformedError,
            id="claims-trailing-byte",
        ),
        pytest.param(
            sign1({1: -8, 4: b"k1"}, {}, b"\x81" * 40 + b"\x01"),
            OversizedError,
            id="claims-too-deep",
        ),
        pytest.param(
            sign1({1: -8, 4: b"k1"}, {}, dump_cbor(cbor2.CBORTag(1, 0))),
            MalformedError,
            id="claims-datetime-tag",
        ),
        pytest.param(
            sign1({1: -8, 4: b"k1"}, {}, b"\xa2\x06\x01\x06\x02"),
            MalformedError,
            id="claims-duplicate-iat",
        ),
    ],
)
def test_cose_structure_errors(message: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        HEBEI.decode(cose_code(message), lookup("130000", ED_KEY), PSEUDONYMISE)


@pytest.mark.doc("partners.md §4")
@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param(
            "HE1:" + b45encode(dump_cbor(sign1({1: -8, 4: b"k1"}, {}, {}))),
            MalformedError,
            id="not-compressed",
        ),
        pytest.param(
            "HE1:" + b45encode(deflate(bytes(10_000_000), raw=False)),
            OversizedError,
            id="zlib-bomb",
        ),
        pytest.param(
            "HE1:" + b45encode(deflate(b"\x81" * 5000 + b"\x01", raw=False)),
            OversizedError,
            id="deep-cbor",
        ),
        pytest.param(
            "HE1:"
            + b45encode(deflate(dump_cbor(sign1({1: -8, 4: b"k1"}, {}, {})), raw=False))[:-5],
            MalformedError,
            id="truncated",
        ),
        pytest.param(
            "HE1:"
            + b45encode(deflate(dump_cbor(sign1({1: -8, 4: b"k1"}, {}, {})), raw=False)).lower(),
            MalformedError,
            id="lower-case-base45",
        ),
    ],
)
def test_cose_transport_errors(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        HEBEI.decode(text, lookup("130000", ED_KEY), PSEUDONYMISE)


def test_cose_codec_seals_and_opens_ps256_with_base64_kids() -> None:
    """The codec is generic enough for EU DCC "HC1:" (PS256, kid = base64 of 8 bytes)."""
    codec = CoseCodec(
        "HC1:",
        frozenset({Algorithm.ES256, Algorithm.PS256}),
        kid_form=KidForm.BASE64,
        tag=CoseTag.CWT_SIGN1,
    )
    key = PrivateKey.generate(Algorithm.PS256)
    kid = base64.b64encode(bytes.fromhex("0011223344556677")).decode()
    code = codec.seal({1: "CN", 6: 1583913600, 4: 1584000000}, key, kid)
    envelope = codec.open(code)
    assert envelope.kid_hint == kid and envelope.alg is Algorithm.PS256
    key.public_key().verify(envelope.signing_input, envelope.signature)
    assert codec.claims(envelope.payload) == {1: "CN", 6: 1583913600, 4: 1584000000}
    hex_codec = CoseCodec("X1:", frozenset({Algorithm.EDDSA}), kid_form=KidForm.HEX)
    assert hex_codec.open(hex_codec.seal({}, ED_KEY, "00ff")).kid_hint == "00ff"


# --- family (a): compact ----------------------------------------------------------------------

BEIJING = ADAPTERS["110000"]  # compact, base45, zlib JSON


def compact_blob(
    *, version: int = 1, kid: bytes = b"k1", payload: bytes, key: PrivateKey = ED_KEY
) -> str:
    signed = bytes((version, len(kid))) + kid + payload
    return "BJ1:" + b45encode(signed + key.sign(signed))


@pytest.mark.doc("partners.md §2")
@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param(
            compact_blob(version=2, payload=deflate(b"{}", raw=False)),
            MalformedError,
            id="version-2",
        ),
        pytest.param(
            compact_blob(kid=b"", payload=deflate(b"{}", raw=False)),
            MalformedError,
            id="kid-length-0",
        ),
        pytest.param(
            compact_blob(kid=b"k 1", payload=deflate(b"{}", raw=False)),
            MalformedError,
            id="kid-with-space",
        ),
        pytest.param(
            compact_blob(kid="密钥".encode(), payload=deflate(b"{}", raw=False)),
            MalformedError,
            id="kid-not-ascii",
        ),
        pytest.param(
            "BJ1:" + b45encode(b"\x01\xff" + b"k" * 70), MalformedError, id="kid-length-past-end"
        ),
        pytest.param(
            "BJ1:" + b45encode(b"\x01\x02k1" + bytes(64)), MalformedError, id="no-payload"
        ),
        pytest.param("BJ1:" + b45encode(b"\x01\x02k1"), MalformedError, id="too-short"),
        pytest.param("BJ1:", MalformedError, id="empty-body"),
        pytest.param(compact_blob(payload=b"{}"), MalformedError, id="payload-not-compressed"),
        pytest.param(
            compact_blob(payload=deflate(bytes(10_000_000), raw=False)),
            OversizedError,
            id="signed-zlib-bomb",
        ),
        pytest.param(
            compact_blob(payload=deflate(b"[" * 30 + b"]" * 30, raw=False)),
            OversizedError,
            id="signed-deep-json",
        ),
        pytest.param(
            compact_blob(payload=deflate(b'{"v":1,"v":1}', raw=False)),
            MalformedError,
            id="signed-duplicate-member",
        ),
        pytest.param(
            compact_blob(payload=deflate(b"[]", raw=False)), MalformedError, id="signed-json-array"
        ),
        pytest.param(
            compact_blob(payload=deflate(b'{"v":NaN}', raw=False)), MalformedError, id="signed-nan"
        ),
        pytest.param(
            compact_blob(payload=deflate(b"\xff\xfe", raw=False)),
            MalformedError,
            id="signed-not-utf8",
        ),
    ],
)
def test_compact_structure_errors(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        BEIJING.decode(text, lookup("110000", ED_KEY), PSEUDONYMISE)


@pytest.mark.doc("partners.md §2")
def test_compact_refuses_an_es256_key_for_signing_and_verifying() -> None:
    codec = CompactCodec("T1:", TextEncoding.BASE64URL, Compression.NONE, JsonPayload())
    with pytest.raises(ValueError, match="EdDSA"):
        codec.seal({}, P256_KEY, "k1")
    assert codec.open(codec.seal({"a": 1}, ED_KEY, "k1")).alg is Algorithm.EDDSA


@pytest.mark.doc("partners.md §2")
def test_the_sm2_variant_of_the_compact_envelope_takes_sm2_keys_only() -> None:
    """partners.md §2: the region fixes the algorithm; the envelope's bytes never say it."""
    pytest.importorskip("tongsuopy", reason="SM2 needs the tongsuopy wheel (docs/crypto.md)")
    codec = CompactCodec(
        "T2:", TextEncoding.BASE64URL, Compression.NONE, JsonPayload(), alg=Algorithm.SM2
    )
    sm2_key = PrivateKey.generate(Algorithm.SM2)
    with pytest.raises(ValueError, match="SM2"):
        codec.seal({}, ED_KEY, "k1")
    envelope = codec.open(codec.seal({"a": 1}, sm2_key, "k1"))
    assert envelope.alg is Algorithm.SM2 and len(envelope.signature) == 64
    sm2_key.public_key().verify(envelope.signing_input, envelope.signature)
    with pytest.raises(ValueError):
        CompactCodec(
            "T3:", TextEncoding.BASE64URL, Compression.NONE, JsonPayload(), alg=Algorithm.ES256
        )


@pytest.mark.doc("partners.md §2")
def test_delimited_payload_rejects_bad_declarations_and_separators_in_values() -> None:
    with pytest.raises(ValueError):
        DelimitedPayload(("a", "a"))
    with pytest.raises(ValueError):
        DelimitedPayload(("a",), "||")
    with pytest.raises(ValueError):
        DelimitedPayload(("a",), "|", frozenset({"b"}))
    with pytest.raises(ValueError, match="separator"):
        DelimitedPayload(("a", "b")).dump({"a": "x|y", "b": "z"})


# --- generic reuse: public conformance vectors ------------------------------------------------


def _dcc_cases() -> list[Any]:
    if not conformance.index("dcc").is_file():
        return conformance.absent("dcc")
    return [
        pytest.param(case, id=Path(case["file"]).stem)
        for case in json.loads(conformance.index("dcc").read_text())["cases"]
    ]


@pytest.mark.conformance
@pytest.mark.parametrize("case", _dcc_cases())
def test_cose_codec_reads_eu_dcc_envelopes(case: dict[str, Any]) -> None:
    """The envelope steps (prefix, base45, zlib, COSE, kid, signature) of every EU DCC case.

    Claim-level steps (DECODE of the hcert, expiry, key usage, schema) are a DCC adapter's job,
    not the codec's, so only UNPREFIX, B45DECODE, COMPRESSION and VERIFY are scored here.
    """
    data = json.loads((conformance.ROOT / "dcc" / case["file"]).read_text(encoding="utf-8"))
    expected = data["EXPECTEDRESULTS"]
    should_pass = all(
        expected.get(f"EXPECTED{step}", True)
        for step in ("UNPREFIX", "B45DECODE", "COMPRESSION", "VERIFY")
    )
    codec = CoseCodec(
        "HC1:",
        frozenset({Algorithm.ES256, Algorithm.PS256}),
        kid_form=KidForm.BASE64,
        tag=CoseTag.CWT_SIGN1,
    )
    cert = base64.b64decode(data["TESTCTX"]["CERTIFICATE"])
    kid = base64.b64encode(hashlib.sha256(cert).digest()[:8]).decode()
    try:
        key = load_public_key(cert)
    except ForeignDataError:
        pytest.skip("the signer certificate is not loadable by keys.crypto")
    try:
        envelope = codec.open(data["PREFIX"])
        if envelope.kid_hint != kid or envelope.alg is not key.alg:
            raise SignatureInvalidError("not signed by the case's certificate")
        key.verify(envelope.signing_input, envelope.signature)
        codec.claims(envelope.payload)
        passed = True
    except ForeignDataError:
        passed = False
    assert passed is should_pass, case["description"]


def _shc_cases() -> list[Any]:
    if not conformance.index("shc").is_file():
        return conformance.absent("shc")
    return [
        pytest.param(case, id=case["id"])
        for case in json.loads(conformance.index("shc").read_text())["cases"]
        if case["kind"] == "jws"
    ]


@pytest.mark.conformance
@pytest.mark.parametrize("case", _shc_cases())
def test_jws_codec_reads_smart_health_card_envelopes(case: dict[str, Any]) -> None:
    """SMART Health Card JWS: zip DEF, ES256 raw r||s, kid = JWK thumbprint, signature verifies.

    Revocation (rid) is a claim-level check and not scored. One example inflates to more than the
    gateway's 16 KiB limit, so the codec is configured with a larger limit for these cards.
    """
    root = conformance.ROOT / "shc"
    jwks = json.loads(
        (root / "spec-examples" / "issuer" / ".well-known" / "jwks.json").read_text()
    )["keys"]
    text = (root / case["files"][0]).read_text().strip()
    codec = JwsCodec("", frozenset({Algorithm.ES256}), deflate=True, max_payload_bytes=64 * 1024)
    envelope = codec.open(text)
    jwk = next(k for k in jwks if k["kid"] == envelope.kid_hint)
    key = load_public_key({m: jwk[m] for m in ("kty", "crv", "x", "y")})
    key.verify(envelope.signing_input, envelope.signature)
    claims = codec.claims(envelope.payload)
    assert {"iss", "nbf", "vc"} <= set(claims)
