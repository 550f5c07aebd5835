"""docs/verifying.md "Input forms": ``trustgw verify --format attestation|home`` takes what the
gateway's answer looks like once a gRPC tool has printed it.

From a real response of a real gateway (printed with ``google.protobuf.json_format`` and
``text_format``, as grpcurl and ``protoc --decode`` do) and from a reply recorded as grpcurl prints
it (lowerCamelCase names, standard base64 with padding and ``+`` / ``/``), to a verdict.
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, text_format
from support.aio import run, serving
from support.clock import REAL_NOW

from adapters.regions import REGION_SPECS
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.cli import main
from gateway.cli._signed_input import MAX_SIGNED_INPUT_BYTES
from keys.model import Mode

# Also runs with every dependency at its floor (.ci/lowest-versions).
pytestmark = pytest.mark.lowest

# --- a reply recorded as grpcurl prints it ----------------------------------------------------
# Signed offline with TEST-ONLY keys (seeds SHA-256("trustgw-test-gateway-attest" / "-issue")):
# grpcurl's JSON: two-space indent, lowerCamelCase names, bytes as padded standard base64,
# int64 as strings, enums by name, default values left out.
RECORDED_TRUST = {
    "region": "370000",
    "keys": [
        {"kid": "fb6a3ead78ad8591", "role": "attest", "alg": "EdDSA",
         "public_key": "MCowBQYDK2VwAyEA1MBbgfZwC4-HDGZ7O2w8Fti1VR5JMVH_0Wju9C_CvKM",
         "not_before": 1577836800, "not_after": 1609459200},
        {"kid": "ab1ad1258997ad61", "role": "issue", "alg": "EdDSA",
         "public_key": "MCowBQYDK2VwAyEAqLnKBO2oI1-D9lbugqWacKQ9l-IAcN08CyNs2AkvUIQ",
         "not_before": 1577836800, "not_after": 1609459200},
    ],
}  # fmt: skip
PAYLOAD_B64 = (
    "eyJjb2RlX2V4cCI6MTU4NDAwMDAwMCwiY29kZV9pYXQiOjE1ODM5MTM2MDAsImNvZGVfaWQiOiI1ZjNhOWMwZTEyZDRi"
    "Njc4IiwiY29kZV9raWQiOiJrYXQtMzMwMDAwIiwiY29sb3VyIjoiZ3JlZW4iLCJjb252ZXJ0ZWRfY29kZV9pZCI6IlNE"
    "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkIiwiZXhwIjoxNTg0MDAwMDAwLCJob2xkZXIiOiJoMS02Yjg2YjI3"
    "M2ZmMzRmY2UxOWQ2YjgwNGVmZjVhM2Y1NyIsImlhdCI6MTU4MzkxNzIwMCwiaXNzIjoiMzcwMDAwIiwibW9kZSI6ImNv"
    "bnZlcnQiLCJyZWdpb24iOiIzMzAwMDAiLCJ0eXAiOiJ0cnVzdGd3L2F0dGVzdGF0aW9uL3YxIn0="
)
SIGNATURE_B64 = (
    "dKFte/StjGGCg9Jcmit7N9W65xzlaGvHTGCGbp/UQt4GQKD+0vWHeHGTQ3um1n3zHZkYnqgvWynGKEBcnHCADw=="
)
HOME_CODE = (
    "SD1:eyJjb2xvdXIiOiJncmVlbiIsImV4cCI6MTU4NDAwMDAwMCwiaG9sZGVyIjoiaDEtdGVzdCIsImlhdCI6MTU4Mzk"
    "xNzIwMCwiaWQiOiJTRDAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZCIsImlzcyI6IjM3MDAwMCIsImtpZCI6Im"
    "FiMWFkMTI1ODk5N2FkNjEiLCJzcmMiOnsiY29kZV9pZCI6IjVmM2E5YzBlMTJkNGI2NzgiLCJyZWdpb24iOiIzMzAwM"
    "DAifSwidHlwIjoidHJ1c3Rndy9ob21lLWNvZGUvdjEifQ.WPKRNUFvbbfC1Ug1dtPndfjFgXNETDoM-R9XwCy_yKCyQOA"
    "yYm4U-QGFg0Wl1G8a60QzmtZvU7q22VvTumvnAg"
)
RECORDED_GRPCURL_REPLY = (
    f"""{{
  "requestId": "4b1d3c0e-7a52-4f0e-9d1a-2f6c1e8b9a70",
  "recognised": true,
  "reason": "RECOGNISED",
  "message": "recognised: a green code of region 330000",
  "region": "330000",
  "mode": "MODE_CONVERT",
  "colour": "COLOUR_GREEN",
  "attestation": {{
    "payload": "{PAYLOAD_B64}",
    "keyId": "fb6a3ead78ad8591",
    "alg": "EdDSA",
    "signature": "{SIGNATURE_B64}"
  }},
  "converted": {{
    "code": "{HOME_CODE}",
    "keyId": "ab1ad1258997ad61",
    "expiresAt": "1584000000",
    "codeId": "SD0123456789abcdef0123456789abcd"
  }},
  "validUntil": "1584000000"
}}
"""
)
RECORDED_AT = "2020-03-11T09:00:00Z"


def verify(
    capsys: pytest.CaptureFixture[str], fmt: str, trust: Path, text: str, *extra: str
) -> tuple[int, dict[str, Any]]:
    exit_code = main(["verify", "--format", fmt, "--trust", str(trust), "--json", *extra, text])
    out = capsys.readouterr().out
    return exit_code, (json.loads(out) if out else {})


@pytest.fixture
def recorded_trust(tmp_path: Path) -> Path:
    path = tmp_path / "trustgw-keys.json"
    path.write_text(json.dumps(RECORDED_TRUST))
    return path


def test_the_recorded_reply_uses_standard_base64_with_padding_and_plus_slash() -> None:
    assert "+" in SIGNATURE_B64 and "/" in SIGNATURE_B64 and SIGNATURE_B64.endswith("==")
    assert PAYLOAD_B64.endswith("=")


@pytest.mark.parametrize("fmt", ["attestation", "home"])
def test_a_reply_recorded_as_grpcurl_prints_it_verifies(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    recorded_trust: Path,
    fmt: str,
) -> None:
    """verifying.md "Input forms": a whole grpcurl RecogniseResponse, as a file and on stdin."""
    reply = tmp_path / "reply.json"
    reply.write_text(RECORDED_GRPCURL_REPLY)
    exit_code, result = verify(capsys, fmt, recorded_trust, str(reply), "--at", RECORDED_AT)
    assert (exit_code, result["reason"]) == (0, "OK"), result
    assert result["claims"]["holder"].startswith("h1-")
    monkeypatch.setattr(sys, "stdin", io.StringIO(RECORDED_GRPCURL_REPLY))
    exit_code, result = verify(capsys, fmt, recorded_trust, "-", "--at", RECORDED_AT)
    assert (exit_code, result["reason"]) == (0, "OK"), result
    later = (datetime(2020, 3, 12, 8, tzinfo=UTC) + timedelta(seconds=1)).isoformat()
    exit_code, result = verify(capsys, fmt, recorded_trust, str(reply), "--at", later)
    assert (exit_code, result["reason"]) == (1, "CODE_EXPIRED")


def test_the_documented_response_members_are_the_protos() -> None:
    """verifying.md "Input forms": the RecogniseResponse members the page lists."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "verifying.md").read_text("utf-8")
    listed = doc.split("for a `RecogniseResponse`: ")[1].split(")")[0]
    names = set(re.findall(r"`([A-Za-z]+)`", listed))
    assert names == {f.json_name for f in pb.RecogniseResponse.DESCRIPTOR.fields}


def _mutated(**changes: Any) -> str:
    reply = json.loads(RECORDED_GRPCURL_REPLY)
    reply["attestation"].update(changes)
    return json.dumps({k: v for k, v in reply.items()})


def _attestation_only(**changes: Any) -> dict[str, Any]:
    return {**json.loads(RECORDED_GRPCURL_REPLY)["attestation"], **changes}


URL_PAYLOAD = base64.urlsafe_b64encode(base64.b64decode(PAYLOAD_B64)).rstrip(b"=").decode()
URL_SIGNATURE = base64.urlsafe_b64encode(base64.b64decode(SIGNATURE_B64)).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(json.dumps(_attestation_only()), id="attestation-proto3-json"),
        pytest.param(
            json.dumps({"payload": URL_PAYLOAD, "key_id": "fb6a3ead78ad8591", "alg": "EdDSA",
                        "signature": URL_SIGNATURE}),
            id="our-own-json-base64url",
        ),
        pytest.param(
            json.dumps({"request_id": "r-1", "attestation": {
                "payload": PAYLOAD_B64, "key_id": "fb6a3ead78ad8591", "alg": "EdDSA",
                "signature": SIGNATURE_B64}}),
            id="response-proto-field-names",
        ),
        pytest.param(
            json.dumps(_attestation_only(payload=URL_PAYLOAD)), id="mixed-alphabets-per-field"
        ),
    ],
)
def test_every_documented_attestation_form_verifies(
    capsys: pytest.CaptureFixture[str], recorded_trust: Path, text: str
) -> None:
    exit_code, result = verify(capsys, "attestation", recorded_trust, text, "--at", RECORDED_AT)
    assert (exit_code, result["reason"]) == (0, "OK"), result


@pytest.mark.parametrize(
    ("text", "reason", "detail"),
    [
        pytest.param(
            RECORDED_GRPCURL_REPLY.replace('"alg": "EdDSA",', '"alg": "EdDSA", "alg": "EdDSA",'),
            "MALFORMED", "repeats a member name", id="duplicate-member",
        ),
        pytest.param(
            json.dumps(_attestation_only(key_id="fb6a3ead78ad8591")),
            "MALFORMED", "an Attestation spells its member 'key_id' twice", id="key_id-and-keyId",
        ),
        pytest.param(
            json.dumps(_attestation_only(extra="x")),
            "MALFORMED", "'extra' is not a member of an Attestation", id="unknown-member",
        ),
        pytest.param(
            json.dumps({**json.loads(RECORDED_GRPCURL_REPLY), "verdict": "ok"}),
            "MALFORMED", "'verdict' is not a member of a RecogniseResponse",
            id="unknown-response-member",
        ),
        pytest.param(
            json.dumps({"recognised": False, "reason": "NOT_GREEN", "message": "red",
                        "region": "330000"}),
            "MALFORMED", "carries no attestation (reason NOT_GREEN): red", id="refused-reply",
        ),
        pytest.param(
            _mutated(signature=SIGNATURE_B64.rstrip("=")),
            "MALFORMED", "neither padded standard base64", id="standard-without-padding",
        ),
        pytest.param(
            _mutated(signature=URL_SIGNATURE + "=="),
            "MALFORMED", "neither padded standard base64", id="base64url-with-padding",
        ),
        pytest.param(
            _mutated(signature=SIGNATURE_B64.replace("/", "_", 1)),
            "MALFORMED", "neither padded standard base64", id="two-alphabets-in-one-field",
        ),
        pytest.param(
            _mutated(signature=SIGNATURE_B64[:-3] + "x=="),
            "MALFORMED", "not in canonical padded standard base64", id="non-canonical-bits",
        ),
        pytest.param(
            _mutated(signature=" " + SIGNATURE_B64),
            "MALFORMED", "neither padded standard base64", id="white-space",
        ),
        pytest.param(
            _mutated(keyId=7), "MALFORMED", "key_id is not a non-empty string", id="kid-number"
        ),
        pytest.param(
            json.dumps({k: v for k, v in _attestation_only().items() if k != "signature"}),
            "MALFORMED", "lacks 'signature'", id="missing-signature",
        ),
        pytest.param("[1]", "MALFORMED", "not a JSON object", id="json-array"),
        pytest.param(
            "payload: 1", "MALFORMED", "neither JSON, nor protobuf text format", id="bad-text"
        ),
        pytest.param(
            '{"a": "' + "x" * MAX_SIGNED_INPUT_BYTES + '"}', "OVERSIZED", "larger than",
            id="oversized",
        ),
        pytest.param(
            _mutated(signature=SIGNATURE_B64.replace("d", "e", 1)),
            "SIGNATURE_INVALID", "", id="tampered-signature",
        ),
    ],
)  # fmt: skip
def test_attestation_input_is_strict(
    capsys: pytest.CaptureFixture[str], recorded_trust: Path, text: str, reason: str, detail: str
) -> None:
    """verifying.md "Input forms": one spelling per field, clear MALFORMED reasons, a bound."""
    exit_code, result = verify(capsys, "attestation", recorded_trust, text, "--at", RECORDED_AT)
    assert (exit_code, result["reason"]) == (1, reason), result
    assert detail in result["detail"]
    if reason in ("MALFORMED", "OVERSIZED"):
        assert result["detail"].startswith("INPUT: ")


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        pytest.param(HOME_CODE, True, id="code-text"),
        pytest.param(json.dumps(json.loads(RECORDED_GRPCURL_REPLY)["converted"]), True,
                     id="converted-code-json"),
        pytest.param(
            f'converted {{\n  code: "{HOME_CODE}"\n  key_id: "ab1ad1258997ad61"\n}}\n',
            True,
            id="text-format",
        ),
        pytest.param(
            json.dumps({"recognised": True, "reason": "RECOGNISED", "mode": "MODE_SHOW",
                        "attestation": _attestation_only()}),
            False, id="show-mode-reply-has-no-home-code",
        ),
        pytest.param(json.dumps({"code": 5}), False, id="code-not-text"),
    ],
)
def test_home_code_input_forms(
    capsys: pytest.CaptureFixture[str], recorded_trust: Path, text: str, accepted: bool
) -> None:
    exit_code, result = verify(capsys, "home", recorded_trust, text, "--at", RECORDED_AT)
    assert exit_code == (0 if accepted else 1), result
    if not accepted:
        assert result["reason"] == "MALFORMED" and result["detail"].startswith("INPUT: ")


# --- a real response of a real gateway --------------------------------------------------------

NOW = REAL_NOW  # a serving gateway reads the real clock


@pytest.fixture(scope="module")
def real_reply(tmp_path_factory: pytest.TempPathFactory) -> tuple[pb.RecogniseResponse, Path]:
    """One recognised convert-mode code, answered by a gateway over gRPC; and its trust file."""
    from adapters.simulator import PartnerSimulator
    from gateway.demo import prepare

    simulator = PartnerSimulator.generate()
    data_dir = tmp_path_factory.mktemp("gateway") / "data"
    data_dir.mkdir()
    run(prepare(data_dir, simulator, NOW))
    region = next(s.code for s in REGION_SPECS if s.mode is Mode.CONVERT)
    code = simulator.issuer(region).issue(
        holder_id="110101199003070011", holder_name="TEST", colour=_green(),
        issued_at=NOW - timedelta(hours=1), expires_at=NOW + timedelta(hours=20),
    )  # fmt: skip

    async def ask() -> pb.RecogniseResponse:
        async with serving(data_dir) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                response: pb.RecogniseResponse = await stub.Recognise(
                    pb.RecogniseRequest(code=code), timeout=10
                )
                return response

    response = run(ask())
    assert response.recognised, response.reason
    trust = data_dir.parent / "trustgw-keys.json"
    assert main(["keys", "export", "--data-dir", str(data_dir), "--out", str(trust)]) == 0
    return response, trust


def _green() -> Any:
    from adapters.base import Colour

    return Colour.GREEN


@pytest.mark.integration
@pytest.mark.parametrize(
    ("printed", "whole_response"),
    [
        pytest.param(lambda r: json_format.MessageToJson(r), True, id="json_format-camelCase"),
        pytest.param(
            lambda r: json_format.MessageToJson(r, preserving_proto_field_name=True),
            True,
            id="json_format-proto-names",
        ),
        pytest.param(lambda r: text_format.MessageToString(r), True, id="text-format"),
        pytest.param(
            lambda r: json_format.MessageToJson(r.attestation), False, id="attestation-json"
        ),
        pytest.param(
            lambda r: text_format.MessageToString(r.attestation), False, id="attestation-text"
        ),
    ],
)
def test_a_real_response_printed_by_protobuf_tools_verifies(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    real_reply: tuple[pb.RecogniseResponse, Path],
    printed: Any,
    whole_response: bool,
) -> None:
    """verifying.md "Input forms": the gateway's own reply, as json_format / protoc print it."""
    response, trust = real_reply
    reply = tmp_path / "reply.txt"
    reply.write_text(printed(response))
    exit_code, result = verify(capsys, "attestation", trust, str(reply))
    assert (exit_code, result["reason"]) == (0, "OK"), result
    assert result["claims"]["region"] == response.region
    if whole_response:
        exit_code, result = verify(capsys, "home", trust, str(reply))
        assert (exit_code, result["reason"]) == (0, "OK"), result
        assert result["claims"]["id"] == response.converted.code_id
