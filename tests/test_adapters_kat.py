"""Known-answer vectors and the independent issuer written from docs/partners.md.

The vectors in tests/vectors/ are fixed code strings made once by tests/kat/independent_issuer.py
with TEST-ONLY keys derived from public strings. The adapters must verify them with the fixed
public keys and decode the pinned fields; for Ed25519 regions (deterministic signatures) both the
independent issuer and the gateway's own codecs must reproduce them byte for byte.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from adapters import ADAPTERS, REGION_SPECS, detect
from adapters.base import Colour
from adapters.simulator import InMemoryKeys
from keys.crypto import Algorithm, PrivateKey, PublicKey
from keys.model import RegionKey
from keys.pseudonym import Pseudonymiser
from keys.timeutil import parse_time

# Also runs with every dependency at its floor (.ci/lowest-versions).
pytestmark = pytest.mark.lowest

HERE = Path(__file__).resolve().parent
VECTORS = HERE / "vectors"
PSEUDONYMISE = Pseudonymiser(b"known-answer-tests-pseudonym-key")
KEY_WINDOW = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC))
REGIONS = [spec.code for spec in REGION_SPECS]


def _load_issuer() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "independent_issuer", HERE / "kat" / "independent_issuer.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("independent_issuer", module)
    spec.loader.exec_module(module)
    return module


ISSUER = _load_issuer()


def vector(region: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"{region}.json").read_text(encoding="utf-8"))
    return data


def kat_private_key(region: str, alg: Algorithm) -> PrivateKey:
    """TEST-ONLY key: seed (Ed25519) or scalar (P-256, SM2) = SHA-256('trustgw-kat-<region>')."""
    seed = hashlib.sha256(f"trustgw-kat-{region}".encode()).digest()
    if alg is Algorithm.EDDSA:
        return PrivateKey.from_ed25519_seed(seed)
    if alg is Algorithm.SM2:
        return PrivateKey.from_sm2_scalar(seed)
    return PrivateKey.from_p256_scalar(seed)


def kat_keys(region: str) -> InMemoryKeys:
    v = vector(region)
    public = PublicKey.from_jwk(v["key"]["public_jwk"])
    return InMemoryKeys.of([RegionKey(region, v["kid"], public, *KEY_WINDOW)])


VECTOR_CASES = [
    pytest.param(region, case["name"], id=f"{region}-{case['name']}")
    for region in REGIONS
    for case in vector(region)["cases"]
]


def _case(region: str, name: str) -> dict[str, Any]:
    return next(c for c in vector(region)["cases"] if c["name"] == name)


@pytest.mark.doc("partners.md §7")
def test_every_region_has_vectors_for_every_colour() -> None:
    assert sorted(p.name[:-5] for p in VECTORS.glob("*.json")) == sorted(REGIONS)
    for region in REGIONS:
        v = vector(region)
        assert v["region"] == region
        assert v["alg"] == ADAPTERS[region].spec.signing_alg.value
        assert {c["expected"]["colour"] for c in v["cases"]} == {c.value for c in Colour}


@pytest.mark.doc("partners.md §7")
@pytest.mark.parametrize("region", REGIONS)
def test_the_vector_public_key_is_the_derived_test_key(region: str) -> None:
    v = vector(region)
    derived = kat_private_key(region, Algorithm(v["alg"])).public_key()
    assert derived.to_jwk() == v["key"]["public_jwk"]


@pytest.mark.doc(
    'partners.md "110000 Beijing"',
    'partners.md "230000 Heilongjiang"',
    'partners.md "340000 Anhui"',
    'partners.md "500000 Chongqing"',
    'partners.md "650000 Xinjiang"',
    'partners.md "120000 Tianjin"',
    'partners.md "310000 Shanghai"',
    'partners.md "410000 Henan"',
    'partners.md "510000 Sichuan"',
    'partners.md "630000 Qinghai"',
    'partners.md "130000 Hebei"',
    'partners.md "330000 Zhejiang"',
    'partners.md "440000 Guangdong"',
    'partners.md "520000 Guizhou"',
)
@pytest.mark.doc("partners.md §7")
@pytest.mark.parametrize(("region", "name"), VECTOR_CASES)
def test_vectors_verify_and_decode_to_the_pinned_fields(region: str, name: str) -> None:
    case = _case(region, name)
    expected = case["expected"]
    adapter = detect(case["code"])
    assert adapter.region == region
    status = adapter.decode(case["code"], kat_keys(region), PSEUDONYMISE).status
    assert status.region == region
    assert status.kid == f"kat-{region}"
    assert status.colour.value == expected["colour"]
    assert status.issued_at == parse_time(expected["issued_at"])
    assert status.expires_at == parse_time(expected["expires_at"])
    assert status.code_id == expected["code_id"]
    assert status.holder == PSEUDONYMISE(region, expected["holder_id"])


@pytest.mark.doc("partners.md §6", "partners.md §7")
@pytest.mark.parametrize(
    ("region", "name"),
    [p for p in VECTOR_CASES if ADAPTERS[p.values[0]].spec.signing_alg is Algorithm.EDDSA],  # type: ignore[index]
)
def test_ed25519_vectors_are_reproduced_byte_for_byte(region: str, name: str) -> None:
    """Deterministic signatures: the independent issuer and our own codec give the same bytes."""
    case = _case(region, name)
    given = case["input"]
    key = kat_private_key(region, Algorithm.EDDSA)
    status = ISSUER.Status(
        given["holder_id"],
        given["holder_name"],
        given["colour"],
        given["issued_at"],
        given["expires_at"],
        given["code_id"],
    )
    assert (
        ISSUER.issue(region, ISSUER.Signer.kat(region, "EdDSA"), f"kat-{region}", status)
        == case["code"]
    )
    spec = ADAPTERS[region].spec
    claims = spec.fields.build(
        holder_id=given["holder_id"],
        holder_name=given["holder_name"],
        colour=Colour(given["colour"]),
        issued_at=datetime.fromtimestamp(given["issued_at"], UTC),
        expires_at=datetime.fromtimestamp(given["expires_at"], UTC),
        code_id=given["code_id"],
    )
    assert spec.codec.seal(claims, key, f"kat-{region}") == case["code"]


@pytest.mark.doc("partners.md §7")
@pytest.mark.parametrize(
    ("region", "name"),
    [p for p in VECTOR_CASES if ADAPTERS[p.values[0]].spec.signing_alg is Algorithm.SM2],  # type: ignore[index]
)
def test_sm2_vectors_are_reproduced_by_the_independent_issuer_and_verify_here(
    region: str, name: str
) -> None:
    """partners.md §7: SM2 vectors use a fixed TEST-ONLY k, so the independent issuer (pysmx)
    reproduces them byte for byte; the gateway's library verifies them, and our own codec's
    (randomised) SM2 signature over the same claims verifies with the independent one."""
    case = _case(region, name)
    given = case["input"]
    status = ISSUER.Status(
        given["holder_id"],
        given["holder_name"],
        given["colour"],
        given["issued_at"],
        given["expires_at"],
        given["code_id"],
    )
    signer = ISSUER.Signer.kat(region, "SM2")
    assert ISSUER.issue(region, signer, f"kat-{region}", status) == case["code"]
    key = kat_private_key(region, Algorithm.SM2)
    assert key.public_key().to_jwk() == vector(region)["key"]["public_jwk"]
    spec = ADAPTERS[region].spec
    claims = spec.fields.build(
        holder_id=given["holder_id"],
        holder_name=given["holder_name"],
        colour=Colour(given["colour"]),
        issued_at=datetime.fromtimestamp(given["issued_at"], UTC),
        expires_at=datetime.fromtimestamp(given["expires_at"], UTC),
        code_id=given["code_id"],
    )
    ours = spec.codec.seal(claims, key, f"kat-{region}")
    envelope = spec.codec.open(ours)
    # Same signed bytes as the vector; only the signature differs (a fresh k).
    assert envelope.signing_input == spec.codec.open(case["code"]).signing_input
    from pysmx.SM2 import Verify

    assert Verify(
        envelope.signature,
        envelope.signing_input,
        key.public_key().raw()[1:],
        64,
        uid=b"1234567812345678",
    )


@pytest.mark.doc("partners.md §7")
@pytest.mark.parametrize(("region", "name"), VECTOR_CASES)
def test_a_vector_does_not_verify_under_another_regions_test_key(region: str, name: str) -> None:
    from keys.errors import ForeignDataError

    other = REGIONS[(REGIONS.index(region) + 1) % len(REGIONS)]
    v = vector(other)
    lookup = InMemoryKeys.of(
        [
            RegionKey(
                region, f"kat-{region}", PublicKey.from_jwk(v["key"]["public_jwk"]), *KEY_WINDOW
            )
        ]
    )
    with pytest.raises(ForeignDataError):
        ADAPTERS[region].decode(_case(region, name)["code"], lookup, PSEUDONYMISE)


@pytest.mark.doc("partners.md §6", "partners.md §6.1", "partners.md §6.2", "partners.md §6.3")
def test_the_worked_examples_in_the_partner_doc_are_the_green_vectors() -> None:
    doc = (HERE.parent / "docs" / "partners.md").read_text(encoding="utf-8")
    for region in ("110000", "510000", "130000"):
        assert _case(region, "green")["code"] in doc, region


# --- the independent issuer, live -------------------------------------------------------------


@pytest.mark.doc('partners.md "Partner code formats"')
@pytest.mark.parametrize("colour", ["green", "yellow", "red"])
@pytest.mark.parametrize("region", REGIONS)
def test_independent_issuer_codes_are_recognised(region: str, colour: str) -> None:
    """Fresh random keys and fresh values: a partner building from the doc is understood."""
    alg = ISSUER.REGIONS[region][1]
    signer = ISSUER.Signer.random(alg)
    kid = f"partner-{region}-2020"
    iat = 1_600_000_000
    status = ISSUER.Status(
        ISSUER.id_number("51010419770707123"), "李秀英", colour, iat, iat + 7200, "9a0b1c2d3e4f"
    )
    code = ISSUER.issue(region, signer, kid, status)
    public = PublicKey.from_jwk(signer.public_jwk())
    lookup = InMemoryKeys.of(
        [
            RegionKey(
                region,
                kid,
                public,
                datetime.fromtimestamp(iat, UTC) - timedelta(days=1),
                datetime.fromtimestamp(iat, UTC) + timedelta(days=1),
            )
        ]
    )
    result = detect(code).decode(code, lookup, PSEUDONYMISE).status
    assert result.region == region
    assert result.colour.value == colour
    assert result.issued_at == datetime.fromtimestamp(iat, UTC)
    assert result.expires_at == datetime.fromtimestamp(iat + 7200, UTC)
    assert result.code_id == ISSUER.expected_code_id(region, status)
    assert result.holder == PSEUDONYMISE(region, status.holder_id)


def test_the_independent_issuer_imports_nothing_from_the_gateway() -> None:
    source = (HERE / "kat" / "independent_issuer.py").read_text(encoding="utf-8")
    for package in ("adapters", "keys", "gateway"):
        assert f"from {package}" not in source and f"import {package}" not in source


# --- the partner page and the code agree ------------------------------------------------------

_FAMILIES = {"(a) compact": "compact", "(b) JWS": "jws", "(c) COSE": "cose"}
_ALGS = {"Ed25519": Algorithm.EDDSA, "ES256": Algorithm.ES256, "SM2": Algorithm.SM2}


def _doc_rows() -> dict[str, list[str]]:
    doc = (HERE.parent / "docs" / "partners.md").read_text(encoding="utf-8")
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0].isdigit() and len(cells[0]) == 6:
            rows[cells[0]] = cells
    return rows


def _doc_age(text: str) -> timedelta:
    number, unit = text.split()
    return timedelta(hours=int(number)) if unit == "h" else timedelta(days=int(number))


@pytest.mark.doc('partners.md "Partner code formats"', 'partners.md §5')
@pytest.mark.parametrize("region", REGIONS)
def test_the_partner_page_table_matches_the_region_spec(region: str) -> None:
    _, _, mode, family, alg, prefix, text, compression, max_age = _doc_rows()[region]
    spec = ADAPTERS[region].spec
    codec: Any = spec.codec
    assert mode == spec.mode.value
    assert _FAMILIES[family] == codec.family
    assert _ALGS[alg] is spec.signing_alg
    assert prefix == f"`{spec.prefix}`"
    assert text == getattr(codec, "text", "base64url")  # JWS is always base64url
    assert _doc_age(max_age) == spec.max_age
    if codec.family == "jws":
        assert compression.startswith("DEF") is codec.deflate
    else:
        assert compression.split()[0] == codec.compression.value
