"""docs/partners.md §1.6 "Derived code ids": the rule, pinned by known-answer vectors.

For each envelope family the worked example of §1.6 is recomputed from its documented inputs
(the claims), checked byte for byte against the documented CBOR, digest, id and revocation hash,
and checked against the id the real adapter reports for the green known-answer code.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path
from typing import Any

import cbor2
import pytest
from test_adapters_kat import ISSUER, kat_keys, kat_private_key

from adapters import ADAPTERS
from adapters.codecs.encoding import b45encode, dump_cbor, parse_cbor, parse_json
from adapters.fields import derived_code_id
from keys.crypto import Algorithm
from keys.errors import MalformedError
from keys.pseudonym import Pseudonymiser
from keys.statements import code_hash

# Also runs with every dependency at its floor (.ci/lowest-versions).
pytestmark = pytest.mark.lowest

HERE = Path(__file__).resolve().parent
DOC = (HERE.parent / "docs" / "partners.md").read_text(encoding="utf-8")
PSEUDONYMISE = Pseudonymiser(b"derived-code-id-tests-secret-key")


def _vector_code(region: str) -> str:
    data = json.loads((HERE / "vectors" / f"{region}.json").read_text(encoding="utf-8"))
    return str(next(c for c in data["cases"] if c["name"] == "green")["code"])


# The worked examples of §1.6, as documented: (region, claims as the partner wrote them,
# CBOR hex, SHA-256, id, code_hash).
KAT = [
    pytest.param(
        "340000",
        '{"idno":"110101199003070011","name":"王伟","color":1,"iat_ms":1583913600000,'
        '"exp_ms":1584000000000}',
        "a56469646e6f72313130313031313939303033303730303131646e616d6566e78e8be4bc9f65636f6c6f72"
        "01666578705f6d731b00000170cdc1e000666961745f6d731b00000170c89b8400",
        "ddd6bef40bb53f1c569db9ae2bce782efd3112f5b217d72f674609c030dea86b",
        "d-ddd6bef40bb53f1c569db9ae2bce782e",
        "79950da45943bb0c08cf14c74a72d70068b51b4e03767bbf580564b2d93ce93c",
        id="compact-340000",
    ),
    pytest.param(
        "630000",
        '{"sfzh":"110101199003070011","xm":"王伟","mzt":1,"sxsj":"20200311160000",'
        '"sxsj_end":"20200312160000"}',
        "a562786d66e78e8be4bc9f636d7a74016473667a6872313130313031313939303033303730303131647378"
        "736a6e3230323030333131313630303030687378736a5f656e646e3230323030333132313630303030",
        "a6a1139848dc7ae2a3b3fb9f16a237d9b6cd316f89e3da69ef988269df194bd1",
        "d-a6a1139848dc7ae2a3b3fb9f16a237d9",
        "f4811c7eb4b4878bc1b69b9bc3f161ebe367c6c162efdf71c6502a70ca14f986",
        id="jws-630000",
    ),
    pytest.param(
        "520000",
        {-70520: {1: "110101199003070011", 2: "王伟", 3: 1}, 6: 1583913600, 4: 1584000000},
        "a3041a5e69ec00061a5e689a803a00011377a301723131303130313139393030333037303031310266e78e"
        "8be4bc9f0301",
        "a710294c7358db37d9ea7d5b989b8478586157defdd4ac1da37b7543a547ada0",
        "d-a710294c7358db37d9ea7d5b989b8478",
        "10e129ecae7b47d8346e8df10e40eaceeff16b8063eb91f69f1b34ee75472fcf",
        id="cose-520000",
    ),
]


@pytest.mark.parametrize(("region", "claims", "cbor_hex", "digest", "code_id", "hashed"), KAT)
def test_section_1_6_worked_examples_are_known_answers(
    region: str, claims: Any, cbor_hex: str, digest: str, code_id: str, hashed: str
) -> None:
    """docs/partners.md §1.6: claims -> deterministic CBOR -> SHA-256 -> id -> code_hash."""
    decoded = parse_json(claims.encode("utf-8")) if isinstance(claims, str) else claims
    encoded = dump_cbor(decoded)
    assert encoded.hex() == cbor_hex
    # An encoder written from the page alone (the independent issuer's) gives the same bytes.
    assert ISSUER.det_cbor(decoded).hex() == cbor_hex
    assert hashlib.sha256(encoded).hexdigest() == digest
    assert derived_code_id(decoded) == code_id == "d-" + digest[:32]
    assert code_hash(region, code_id) == hashed
    assert hashlib.sha256(f"{region}|{code_id}".encode()).hexdigest() == hashed
    # The real adapter reports that id for the green known-answer code with these claims.
    status = ADAPTERS[region].decode(_vector_code(region), kat_keys(region), PSEUDONYMISE).status
    assert status.code_id == code_id
    # And the page says all of it.
    for text in (cbor_hex, digest, code_id, hashed):
        assert text in DOC, text
    if isinstance(claims, str):
        assert f"`{claims}`" in DOC


def _sign1_code(region: str, payload: bytes) -> str:
    """A 520000 code (COSE, tag 18, zlib, base45) around ``payload`` bytes exactly as given."""
    key = kat_private_key(region, Algorithm.EDDSA)
    protected = cbor2.dumps({1: -8, 4: f"kat-{region}".encode()})
    signed = cbor2.dumps(["Signature1", protected, b"", payload])
    message = cbor2.CBORTag(18, [protected, {}, payload, key.sign(signed)])
    return "GZ1:" + b45encode(zlib.compress(cbor2.dumps(message), 9))


def test_section_1_6_a_cose_payload_in_another_encoding_gets_the_same_id() -> None:
    """§1.6: CBOR claims are decoded and written again deterministically before hashing."""
    region = "520000"
    # Keys in the issuer's own order, an integer in a longer head than needed (1 as 0x1801)
    # and an indefinite-length text string: valid CBOR, not deterministic.
    loose = bytes.fromhex(
        "a3"
        "3a00011377a3"
        "01" + "7f" + "72" + b"110101199003070011".hex() + "ff"
        "0266e78e8be4bc9f"
        "031801"
        "061a5e689a80"
        "041a5e69ec00"
    )
    assert parse_cbor(loose) == KAT[2].values[1]
    assert dump_cbor(parse_cbor(loose)) != loose
    status = ADAPTERS[region].decode(_sign1_code(region, loose), kat_keys(region), PSEUDONYMISE)
    assert status.status.code_id == KAT[2].values[4]


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        pytest.param({24: 0, -1: 0}, "a2181800" "2000", id="24-before-minus-1"),
        pytest.param({"a": 0, 1000: 0}, "a21903e800" "616100", id="int-before-text"),
        pytest.param({"bb": 0, "a": 0, "c": 0}, "a3616100616300626262" "00", id="shorter-text"),
        pytest.param({b"\x01": 0, 0: 0}, "a20000" "410100", id="uint-before-bytes"),
    ],
)
def test_section_1_6_map_keys_sort_by_their_encoded_bytes(value: Any, encoded: str) -> None:
    """§1.6 and §1.2: RFC 8949 §4.2.1 bytewise key order, not RFC 7049 length-first order."""
    assert dump_cbor(value).hex() == encoded


@pytest.mark.parametrize(
    ("json_text", "encoded"),
    [
        pytest.param("1", "01", id="integer"),
        pytest.param("-1", "20", id="negative-integer"),
        pytest.param("1.0", "f93c00", id="integral-fraction-is-a-float"),
        pytest.param("1e2", "f95640", id="exponent-is-a-float"),
        pytest.param("0.1", "fb3fb999999999999a", id="double"),
        pytest.param("0.5", "f93800", id="half"),
        pytest.param("100000.5", "fa47c35040", id="single"),
        pytest.param("-0.0", "f98000", id="negative-zero"),
        pytest.param("18446744073709551615", "1bffffffffffffffff", id="largest-uint"),
        pytest.param("18446744073709551616", "c249010000000000000000", id="bignum"),
        pytest.param("-18446744073709551617", "c349010000000000000000", id="negative-bignum"),
        pytest.param("true", "f5", id="true"),
        pytest.param("false", "f4", id="false"),
        pytest.param("null", "f6", id="null"),
        pytest.param('"\\u00e9"', "62c3a9", id="escaped-text-as-utf8"),
        pytest.param('"e\\u0301"', "6365cc81", id="no-unicode-normalisation"),
        pytest.param("[1,[]]", "820180", id="arrays"),
    ],
)
def test_section_1_6_json_values_map_to_cbor(json_text: str, encoded: str) -> None:
    """§1.6: how a JSON value becomes CBOR, integers and floats told apart by their spelling."""
    assert dump_cbor(parse_json(f'{{"v":{json_text}}}'.encode())["v"]).hex() == encoded


def test_section_1_6_integer_and_float_spellings_give_different_ids() -> None:
    ids = {derived_code_id(parse_json(f'{{"color":{n}}}'.encode())) for n in ("1", "1.0", "1e0")}
    assert len(ids) == 2  # 1.0 and 1e0 are the same float


def test_section_1_6_every_member_counts_and_order_does_not() -> None:
    base = derived_code_id(parse_json(b'{"a":1,"b":"x"}'))
    assert derived_code_id(parse_json(b'{"b":"x","a":1}')) == base
    assert derived_code_id(parse_json(b'{"a":1,"b":"x","ignored":null}')) != base


def test_section_1_6_a_lone_surrogate_makes_the_code_malformed() -> None:
    with pytest.raises(MalformedError, match="not valid Unicode"):
        derived_code_id(parse_json(b'{"name":"\\ud800"}'))
