"""docs/conformance.md "Date tags in the DCC payload": tags 0 and 1 where the DCC schema holds a
date-time (a test's ``sc``, and ``dr`` of schemas before 1.3), and nowhere else.

The certificates are built here with a TEST key and signed through the real HC1 path
(``trustgw verify --format hc1``); the partner-region formats keep refusing every date tag.
"""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2
import pytest
from credentials_support import EKU_TEST, certificate, dcc_code, kid_of

from adapters.base import Colour
from adapters.codecs.encoding import b45encode, dump_cbor
from adapters.regions import ADAPTERS
from gateway.cli import main
from keys.crypto import PrivateKey
from keys.errors import MalformedError
from keys.model import RegionKey

# Also runs with every dependency at its floor (.ci/lowest-versions).
pytestmark = pytest.mark.lowest

T0 = 1_622_548_800  # 2021-06-01T12:00:00Z
KEY = PrivateKey.from_p256_scalar(b"\x05" * 32)
CERT = certificate(KEY, [EKU_TEST])
KID = kid_of(CERT)
SC_TEXT = "2021-06-01T10:00:00Z"


def _test_entry(**fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "tg": "840539006",
        "tt": "LP6464-4",
        "sc": SC_TEXT,
        "tr": "260415000",
        "tc": "TEST centre",
        "co": "XX",
        "is": "TEST issuer",
        "ci": "URN:UVCI:01:XX:TEST0001",
    }
    entry.update(fields)
    return entry


def _claims(dcc: dict[str, Any], cwt: dict[Any, Any] | None = None) -> dict[Any, Any]:
    base = {"ver": "1.3.0", "nam": {"fnt": "TEST"}, "dob": "1990-01-01"}
    return {1: "XX", 6: T0 - 3600, 4: T0 + 86400, -260: {1: {**base, **dcc}}, **(cwt or {})}


def _verify(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, claims: dict[Any, Any]
) -> tuple[int, dict[str, Any]]:
    trust = tmp_path / "dsc.der"
    trust.write_bytes(CERT)
    code = dcc_code(KEY, claims, kid=KID)
    exit_code = main(["verify", "--format", "hc1", "--trust", str(trust), "--at", str(T0),
                      "--json", code])  # fmt: skip
    return exit_code, json.loads(capsys.readouterr().out)


def _dcc(result: dict[str, Any]) -> dict[str, Any]:
    return dict(result["claims"]["-260"]["1"])


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param(cbor2.CBORTag(0, SC_TEXT), SC_TEXT, id="tag-0"),
        pytest.param(
            cbor2.CBORTag(0, "2021-06-01T12:00:00.123+02:00"),
            "2021-06-01T12:00:00.123+02:00",
            id="tag-0-offset-fraction",
        ),
        pytest.param(cbor2.CBORTag(1, 1_622_541_600), "2021-06-01T10:00:00Z", id="tag-1"),
        pytest.param(
            cbor2.CBORTag(1, 1_622_541_600.5), "2021-06-01T10:00:00.500000Z", id="tag-1-float"
        ),
        pytest.param(SC_TEXT, SC_TEXT, id="untagged"),
    ],
)
def test_a_tests_sample_collection_time_may_carry_a_date_tag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, value: Any, shown: str
) -> None:
    """conformance.md "Date tags": ``t[].sc`` tagged 0 or 1 verifies; claims show the text."""
    exit_code, result = _verify(capsys, tmp_path, _claims({"t": [_test_entry(sc=value)]}))
    assert (exit_code, result["reason"]) == (0, "OK"), result["detail"]
    assert _dcc(result)["t"][0]["sc"] == shown


def test_a_test_result_time_of_older_schemas_may_carry_a_date_tag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``t[].dr`` (schemas 1.0 to 1.2, date-time) in a second test entry, tag 1."""
    entries = [_test_entry(), _test_entry(dr=cbor2.CBORTag(1, 1_622_545_200))]
    exit_code, result = _verify(capsys, tmp_path, _claims({"ver": "1.0.0", "t": entries}))
    assert exit_code == 0, result["detail"]
    assert _dcc(result)["t"][1]["dr"] == "2021-06-01T11:00:00Z"


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        pytest.param(
            _claims({"v": [{"tg": "840539006", "dt": cbor2.CBORTag(0, "2021-05-01T00:00:00Z")}]}),
            "-260.1.v.0.dt",
            id="vaccination-date",
        ),
        pytest.param(
            _claims({"r": [{"tg": "840539006", "df": cbor2.CBORTag(1, 1_620_000_000)}]}),
            "-260.1.r.0.df",
            id="recovery-valid-from",
        ),
        pytest.param(
            _claims({"t": [_test_entry()], "dob": cbor2.CBORTag(0, "1990-01-01T00:00:00Z")}),
            "-260.1.dob",
            id="date-of-birth",
        ),
        pytest.param(
            _claims({"t": [_test_entry(tc=cbor2.CBORTag(0, SC_TEXT))]}),
            "-260.1.t.0.tc",
            id="other-test-member",
        ),
        pytest.param(
            _claims({"v": [{"tg": "840539006", "sc": cbor2.CBORTag(0, SC_TEXT)}]}),
            "-260.1.v.0.sc",
            id="sc-outside-a-test-entry",
        ),
        pytest.param(
            _claims({"t": [_test_entry()]}, {6: cbor2.CBORTag(1, T0 - 3600)}),
            "6",
            id="cwt-iat",
        ),
        pytest.param(
            _claims({"t": [_test_entry()]}, {-1: {"sc": cbor2.CBORTag(0, SC_TEXT)}}),
            "-1.sc",
            id="outside-the-health-certificate",
        ),
        pytest.param(
            _claims({"t": {"sc": cbor2.CBORTag(0, SC_TEXT)}}),
            "-260.1.t.sc",
            id="t-not-an-array",
        ),
    ],
)
def test_date_tags_anywhere_else_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, claims: dict[Any, Any], detail: str
) -> None:
    """conformance.md "Date tags": only at ``-260 → 1 → t[i] → sc / dr``."""
    exit_code, result = _verify(capsys, tmp_path, claims)
    assert (exit_code, result["reason"]) == (1, "MALFORMED")
    assert result["detail"].startswith("DECODE: ")
    assert f"at {detail}" in result["detail"]
    assert result["claims"] == {}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(cbor2.CBORTag(0, 1_622_541_600), id="tag-0-on-a-number"),
        pytest.param(cbor2.CBORTag(1, SC_TEXT), id="tag-1-on-text"),
        pytest.param(cbor2.CBORTag(0, "2021-06-01"), id="tag-0-date-only"),
        pytest.param(cbor2.CBORTag(0, "2021-06-01T10:00:00"), id="tag-0-no-offset"),
        pytest.param(cbor2.CBORTag(0, "2021-06-01 10:00:00Z"), id="tag-0-space"),
        pytest.param(cbor2.CBORTag(0, "2021-13-01T10:00:00Z"), id="tag-0-month-13"),
        pytest.param(cbor2.CBORTag(0, "2021-06-01T10:00:00Z" + " " * 60), id="tag-0-too-long"),
        pytest.param(cbor2.CBORTag(1, True), id="tag-1-on-a-boolean"),
        pytest.param(cbor2.CBORTag(1, float("nan")), id="tag-1-nan"),
        pytest.param(cbor2.CBORTag(1, 10**20), id="tag-1-out-of-range"),
        pytest.param(cbor2.CBORTag(1004, "2021-06-01"), id="tag-1004"),
        pytest.param(cbor2.CBORTag(0, cbor2.CBORTag(0, SC_TEXT)), id="tag-0-twice"),
    ],
)
def test_a_date_tag_must_hold_a_valid_date_time(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, value: Any
) -> None:
    exit_code, result = _verify(capsys, tmp_path, _claims({"t": [_test_entry(sc=value)]}))
    assert (exit_code, result["reason"]) == (1, "MALFORMED"), result["detail"]
    assert result["detail"].startswith("DECODE: ")


def test_a_date_tag_in_the_cose_header_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    trust = tmp_path / "dsc.der"
    trust.write_bytes(CERT)
    protected = {1: -7, 4: KID, 99: cbor2.CBORTag(1, T0)}
    message = cbor2.CBORTag(18, [cbor2.dumps(protected), {}, cbor2.dumps(_claims({})), b"x" * 64])
    code = "HC1:" + b45encode(zlib.compress(cbor2.dumps(message)))
    assert main(["verify", "--format", "hc1", "--trust", str(trust), "--json", code]) == 1
    result = json.loads(capsys.readouterr().out)
    assert (result["reason"], result["detail"][:6]) == ("MALFORMED", "COSE: ")


@pytest.mark.parametrize("region", ["130000", "330000", "440000", "520000"])
def test_partner_cose_formats_keep_refusing_date_tags(region: str) -> None:
    """partners.md §1.2: no tag but 18 and 61 in a partner code, not even on a time."""
    spec = ADAPTERS[region].spec
    key = PrivateKey.generate(spec.signing_alg)
    now = datetime(2021, 6, 1, 12, tzinfo=UTC)
    claims = spec.fields.build(holder_id="110101199003070011", holder_name="TEST",
                               colour=Colour.GREEN, issued_at=now, expires_at=now.replace(hour=13),
                               code_id="5f3a9c0e12d4b678")  # fmt: skip
    claims["sc"] = cbor2.CBORTag(0, SC_TEXT)
    code = spec.codec.seal(claims, key, "test-kid")
    keys = _OneKey(RegionKey(region, "test-kid", key.public_key(), now.replace(year=2020),
                             now.replace(year=2022)))  # fmt: skip
    with pytest.raises(MalformedError, match="tag"):
        ADAPTERS[region].decode(code, keys, lambda region, raw: "h1-test")
    assert dump_cbor(claims)  # the claims themselves encode: it is the tag that is refused


class _OneKey:
    def __init__(self, key: RegionKey) -> None:
        self.key = key

    def keys_for(self, region: str, kid_hint: str | None) -> tuple[RegionKey, ...]:
        return (self.key,) if region == self.key.region else ()
