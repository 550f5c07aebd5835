"""The rules of docs/partners.md §1 to §4, one case each, on codes made by the issuer written from
the page (doc_issuer.py) with one thing changed: what the page accepts decodes, what it refuses
is refused with the reason it names. Decoded by the gateway's adapters (``adapters.detect``),
the path every ``Recognise`` takes, with the issuer's key registered for its region.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import doc_issuer as di
import pytest

from adapters import detect
from adapters.simulator import InMemoryKeys
from keys.crypto import PublicKey
from keys.errors import GatewayError
from keys.model import RegionKey
from keys.pseudonym import Pseudonymiser

T0 = datetime(2026, 3, 11, 8, tzinfo=UTC)
PSEUDONYMISE = Pseudonymiser(b"doc-rules-pseudonym-key-32-bytes")
KEYS = {code: di.SigningKey.generate(r.alg, f"rules-{code}") for code, r in di.REGIONS.items()}


def holder(**changes: Any) -> di.Holder:
    base = di.Holder(
        "110101199003070011", "王伟", "green", T0, T0 + timedelta(hours=24), "5f3a9c0e12d4b678"
    )
    return replace(base, **changes)


def decode(code: str, region: str, key: di.SigningKey | None = None) -> str:
    """``OK`` or the refusal's reason."""
    key = key or KEYS[region]
    public = PublicKey.from_jwk(key.public_jwk())
    window = (T0 - timedelta(days=365 * 30), T0 + timedelta(days=365 * 30))
    keys = InMemoryKeys.of([RegionKey(region, key.kid, public, *window)])
    try:
        detect(code).decode(code, keys, PSEUDONYMISE)
    except GatewayError as error:
        return error.reason
    return "OK"


def code(
    region: str,
    claims: Callable[[di.Holder], Any] | None = None,
    h: di.Holder | None = None,
    key: di.SigningKey | None = None,
    **spec: Any,
) -> str:
    r = di.REGIONS[region]
    if claims:
        r = replace(r, claims=claims)
    return di.issue(replace(r, **spec), key or KEYS[region], h or holder())


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def with_hs(h: di.Holder, **members: Any) -> Any:
    claims = di._bj(h)
    return {**claims, "hs": {**claims["hs"], **members}}


Case = tuple[Callable[[], tuple[str, str]], str]


def run_case(make: Callable[[], tuple[str, str]], expected: str) -> None:
    text, region = make()
    assert decode(text, region) == expected


# --- §1.1 ----------------------------------------------------------------------------------------


@pytest.mark.doc("partners.md §1.1")
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(lambda: (code("110000"), "110000"), "OK", id="as-issued"),
        pytest.param(
            lambda: ((c := code("110000")) + "0" * (4096 - len(c)), "110000"),
            "SIGNATURE_INVALID",
            id="4096-characters-is-read",
        ),
        pytest.param(
            lambda: ((c := code("110000")) + "0" * (4097 - len(c)), "110000"),
            "OVERSIZED",
            id="4097-characters-is-oversized",
        ),
        pytest.param(
            lambda: ("bj1:" + code("110000")[4:], "110000"), "REGION_UNKNOWN", id="prefix-case"
        ),
        pytest.param(
            lambda: ((c := code("110000"))[:30] + "\n" + c[30:], "110000"),
            "MALFORMED",
            id="line-break-inside",
        ),
        pytest.param(
            lambda: ((c := code("510000"))[:30] + " " + c[30:], "510000"),
            "MALFORMED",
            id="space-inside-base64url",
        ),
        pytest.param(
            lambda: (code("110000", lambda h: {**di._bj(h), "x": nested(15)}), "110000"),
            "OK",
            id="json-16-levels",
        ),
        pytest.param(
            lambda: (code("110000", lambda h: {**di._bj(h), "x": nested(16)}), "110000"),
            "OVERSIZED",
            id="json-17-levels",
        ),
        pytest.param(
            lambda: (code("130000", lambda h: {**di._he(h), 99: nested(15)}), "130000"),
            "OK",
            id="cbor-16-levels",
        ),
        pytest.param(
            lambda: (code("130000", lambda h: {**di._he(h), 99: nested(16)}), "130000"),
            "OVERSIZED",
            id="cbor-17-levels",
        ),
    ],
)
def test_text_prefix_and_limits(make: Callable[[], tuple[str, str]], expected: str) -> None:
    run_case(make, expected)


@pytest.mark.doc("partners.md §1.1", "partners.md §1.2")
def test_a_base45_code_may_hold_spaces_inside() -> None:
    """The space is one of base45's 45 characters (§1.2): only white space around is cut."""
    made = (code("110000", h=holder(code_id=f"id-{n}")) for n in range(500))
    with_space = next(c for c in made if " " in c[4:])
    assert decode(with_space, "110000") == "OK"


@pytest.mark.doc("partners.md §1.1", "partners.md §1.3")
def test_a_128_character_kid_verifies() -> None:
    """§1.1 / §1.3: the longest key id fits the compact envelope's one length byte."""
    key = di.SigningKey.generate("EdDSA", "k" * 128)
    assert decode(code("110000", key=key), "110000", key) == "OK"


# --- §1.2 ----------------------------------------------------------------------------------------


def jws(region: str, header: dict[str, Any] | None, payload: bytes) -> str:
    key = KEYS[region]
    header = {"alg": key.alg, "kid": key.kid} if header is None else header
    signing_input = f"{di.b64url(di.compact_json(header))}.{di.b64url(payload)}"
    signature = di.b64url(key.sign(signing_input.encode("ascii")))
    return f"{di.REGIONS[region].prefix}{signing_input}.{signature}"


SC_CLAIMS = di.compact_json(di._sc(holder()))


@pytest.mark.doc("partners.md §1.2")
@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(SC_CLAIMS, "OK", id="compact"),
        pytest.param(json.dumps(di._sc(holder()), indent=2).encode(), "OK", id="any-serialisation"),
        pytest.param(json.dumps(di._sc(holder())).encode(), "OK", id="u-escapes"),
        pytest.param(SC_CLAIMS[:-1] + b',"iat":1583913600}', "MALFORMED", id="repeated-member"),
        pytest.param(SC_CLAIMS[:-1] + b',"z":NaN}', "MALFORMED", id="nan"),
        pytest.param(SC_CLAIMS[:-1] + b',"z":Infinity}', "MALFORMED", id="infinity"),
        pytest.param(b"[1]", "MALFORMED", id="not-an-object"),
        pytest.param(SC_CLAIMS + b" {}", "MALFORMED", id="two-values"),
    ],
)
def test_json(payload: bytes, expected: str) -> None:
    assert decode(jws("510000", None, payload), "510000") == expected


def cose(
    protected: dict[int, Any],
    unprotected: dict[int, Any],
    claims: Any,
    *,
    trailing: bytes = b"",
) -> str:
    key = KEYS["130000"]
    protected_bytes, payload = di.cbor(protected), di.cbor(claims)
    signature = key.sign(di.cbor(["Signature1", protected_bytes, b"", payload]))
    message = di.cbor(di.Tag(18, [protected_bytes, unprotected, payload, signature])) + trailing
    return "HE1:" + di.base45(zlib.compress(message, 9))


KID = KEYS["130000"].kid.encode()


@pytest.mark.doc("partners.md §1.2", "partners.md §4")
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(lambda: cose({1: -8, 4: KID}, {}, di._he(holder())), "OK", id="as-issued"),
        pytest.param(
            lambda: cose({1: -8, 4: KID}, {}, {**di._he(holder()), 99: di.Tag(1, 5)}),
            "MALFORMED",
            id="tag-1-in-claims",
        ),
        pytest.param(
            lambda: cose({1: -8, 4: KID}, {}, {**di._he(holder()), 99: di.Tag(2, b"\x01")}),
            "MALFORMED",
            id="tag-2-bignum",
        ),
        pytest.param(
            lambda: cose({1: -8, 4: KID}, {}, di._he(holder()), trailing=b"\x00"),
            "MALFORMED",
            id="bytes-after-the-item",
        ),
        pytest.param(lambda: cose({1: -8}, {}, di._he(holder())), "OK", id="no-kid-tries-keys"),
        pytest.param(lambda: cose({4: KID}, {1: -8}, di._he(holder())), "OK", id="alg-unprotected"),
        pytest.param(lambda: cose({1: -8}, {4: KID}, di._he(holder())), "OK", id="kid-unprotected"),
        pytest.param(
            lambda: cose({1: -8, 4: KID, 2: [1]}, {}, di._he(holder())), "MALFORMED", id="crit"
        ),
        pytest.param(
            lambda: cose({1: -8, 4: KEYS["130000"].kid}, {}, di._he(holder())),
            "MALFORMED",
            id="kid-as-text",
        ),
        pytest.param(
            lambda: cose({1: -7, 4: KID}, {}, di._he(holder())),
            "ALGORITHM_UNSUPPORTED",
            id="alg-of-another-region",
        ),
    ],
)
def test_cbor_and_cose(make: Callable[[], str], expected: str) -> None:
    assert decode(make(), "130000") == expected


@pytest.mark.doc("partners.md §4")
@pytest.mark.parametrize("wrap", ["18", "61", "untagged"])
@pytest.mark.parametrize("region", ["130000", "330000", "440000", "520000"])
def test_every_cose_region_takes_all_three_wrappings(region: str, wrap: str) -> None:
    assert decode(code(region, cose_wrap=wrap), region) == "OK"


# --- §1.4 ----------------------------------------------------------------------------------------


@pytest.mark.doc("partners.md §1.4")
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(
            lambda: (code("110000", h=holder(code_id="c" * 128)), "110000"), "OK", id="id-128"
        ),
        pytest.param(
            lambda: (code("110000", h=holder(code_id="码" * 128)), "110000"),
            "OK",
            id="id-128-non-ascii",
        ),
        pytest.param(
            lambda: (code("110000", h=holder(code_id="c" * 129)), "110000"),
            "MALFORMED",
            id="id-129",
        ),
        pytest.param(
            lambda: (code("110000", h=holder(code_id="")), "110000"), "MALFORMED", id="id-empty"
        ),
        pytest.param(
            lambda: (code("110000", h=holder(code_id="a\nb")), "110000"),
            "MALFORMED",
            id="id-control-character",
        ),
        pytest.param(
            lambda: (code("130000", h=holder(code_id="ab" * 64)), "130000"), "OK", id="cti-64"
        ),
        pytest.param(
            lambda: (code("130000", h=holder(code_id="ab" * 65)), "130000"),
            "MALFORMED",
            id="cti-65",
        ),
        pytest.param(
            lambda: (code("110000", h=holder(idno="11010119900307001x")), "110000"),
            "OK",
            id="id-number-lower-case-x",
        ),
        pytest.param(
            lambda: (code("110000", h=holder(idno="11010119900307001")), "110000"),
            "MALFORMED",
            id="id-number-17-characters",
        ),
        pytest.param(
            lambda: (code("110000", h=holder(idno="\uff11\uff110101199003070011")), "110000"),
            "MALFORMED",
            id="id-number-full-width-digits",
        ),
        pytest.param(
            lambda: (code("110000", lambda h: {**di._bj(h), "p": {"id": h.idno}}), "110000"),
            "OK",
            id="name-is-optional",
        ),
        pytest.param(
            lambda: (code("110000", lambda h: with_hs(h, c="g")), "110000"),
            "MALFORMED",
            id="colour-other-spelling",
        ),
        pytest.param(
            lambda: (
                code("310000", lambda h: {**di._sh(h), "hs": {**di._sh(h)["hs"], "c": 0.0}}),
                "310000",
            ),
            "MALFORMED",
            id="colour-0.0-is-not-0",
        ),
        pytest.param(
            lambda: (code("500000", lambda h: [*di._cq(h)[:3], "00", *di._cq(h)[4:]]), "500000"),
            "MALFORMED",
            id="colour-00-is-not-0",
        ),
        pytest.param(
            lambda: (
                code("110000", h=holder(issued_at=datetime(1999, 12, 31, tzinfo=UTC))),
                "110000",
            ),
            "MALFORMED",
            id="issued-before-2000",
        ),
        pytest.param(
            lambda: (
                code("110000", h=holder(expires_at=datetime(2200, 1, 2, tzinfo=UTC))),
                "110000",
            ),
            "MALFORMED",
            id="expires-after-2200",
        ),
        pytest.param(
            lambda: (code("110000", h=holder(expires_at=T0)), "110000"),
            "MALFORMED",
            id="expires-at-issue",
        ),
        pytest.param(
            lambda: (
                code("120000", lambda h: {**di._tj(h), "exp": di.unix_ms(h.expires_at)}),
                "120000",
            ),
            "MALFORMED",
            id="milliseconds-in-a-seconds-claim",
        ),
        pytest.param(
            lambda: (
                code(
                    "650000",
                    lambda h: {
                        **di._xj(h),
                        "status": {**di._xj(h)["status"], "from": "2026-03-11T16:00:00"},
                    },
                ),
                "650000",
            ),
            "MALFORMED",
            id="iso-without-offset",
        ),
        pytest.param(
            lambda: (
                code("230000", lambda h: [*di._hlj(h)[:5], di._hlj(h)[5][:13], di._hlj(h)[6]]),
                "230000",
            ),
            "MALFORMED",
            id="cst-compact-13-digits",
        ),
        pytest.param(
            lambda: (code("110000", lambda h: {**di._bj(h), "v": 2}), "110000"),
            "MALFORMED",
            id="constant-other-value",
        ),
        pytest.param(
            lambda: (code("110000", lambda h: {**di._bj(h), "v": 1.0}), "110000"),
            "MALFORMED",
            id="constant-other-type",
        ),
        pytest.param(
            lambda: (code("110000", lambda h: {**di._bj(h), "zz": [1, {"y": None}]}), "110000"),
            "OK",
            id="members-not-listed-are-ignored",
        ),
    ],
)
def test_claim_values(make: Callable[[], tuple[str, str]], expected: str) -> None:
    run_case(make, expected)


# --- §2 and §3 -----------------------------------------------------------------------------------


@pytest.mark.doc("partners.md §2")
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(
            lambda: (
                code("500000", lambda h: [*di._cq(h)[:4], "0" + di._cq(h)[4], di._cq(h)[5]]),
                "500000",
            ),
            "MALFORMED",
            id="integer-with-leading-zero",
        ),
        pytest.param(
            lambda: (code("500000", lambda h: [*di._cq(h)[:5], "1" * 16]), "500000"),
            "MALFORMED",
            id="integer-of-16-digits",
        ),
        pytest.param(
            lambda: (code("230000", h=holder(name="王|伟")), "230000"),
            "MALFORMED",
            id="value-holding-the-separator",
        ),
        pytest.param(
            lambda: (code("230000", lambda h: [*di._hlj(h), "x"]), "230000"),
            "MALFORMED",
            id="one-field-too-many",
        ),
        pytest.param(
            lambda: (code("110000", compress=False), "110000"),
            "MALFORMED",
            id="region-compresses-payload-not-compressed",
        ),
    ],
)
def test_compact_envelope(make: Callable[[], tuple[str, str]], expected: str) -> None:
    run_case(make, expected)


def _header(**members: Any) -> dict[str, Any]:
    return {"alg": "EdDSA", "kid": KEYS["510000"].kid, **members}


_PADDING = len(di.compact_json(_header(typ="")))


@pytest.mark.doc("partners.md §3")
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(_header(), "OK", id="alg-and-kid"),
        pytest.param(_header(typ="anything"), "OK", id="typ-ignored"),
        pytest.param({"alg": "EdDSA"}, "MALFORMED", id="no-kid"),
        pytest.param(_header(alg="none"), "ALGORITHM_UNSUPPORTED", id="alg-none"),
        pytest.param(_header(alg="ES256"), "ALGORITHM_UNSUPPORTED", id="alg-of-another-region"),
        pytest.param(_header(zip="DEF"), "MALFORMED", id="zip-in-a-region-that-does-not-compress"),
        *(
            pytest.param(_header(**{member: "x"}), "MALFORMED", id=f"{member}-refused")
            for member in ("crit", "b64", "enc", "jku", "x5u", "jwk")
        ),
        pytest.param(_header(typ="x" * (1024 - _PADDING)), "OK", id="header-1024-bytes"),
        pytest.param(_header(typ="x" * (1025 - _PADDING)), "OVERSIZED", id="header-1025-bytes"),
    ],
)
def test_jws_header(header: dict[str, Any], expected: str) -> None:
    assert decode(jws("510000", header, SC_CLAIMS), "510000") == expected


@pytest.mark.doc("partners.md §3")
def test_a_compressing_jws_region_needs_zip_def() -> None:
    assert decode(code("310000"), "310000") == "OK"
    assert decode(code("310000", compress=False), "310000") == "MALFORMED"
