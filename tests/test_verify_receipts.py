"""docs/verifying.md "Submission receipts", "Command" and "Input forms": ``trustgw verify --format
receipt`` takes a partner's signed receipt as ``trustgw partner-tools publish`` keeps and prints
it, and as gRPC tools print the ``SubmissionReceipt``.

From a real gateway over mutual TLS: a key set published with ``partner-tools publish``
(``--json``, ``--receipt-out``, and its text output), the same bytes again over gRPC (a duplicate:
a new signature over the first receipt's facts), printed with ``json_format`` and ``text_format``
as grpcurl and ``protoc --decode`` do; to a verdict.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import re
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format, text_format
from registry_grpc_support import NOW, SHOW, client, listed, make_pki, partner_for
from support.aio import run, serving

from adapters.simulator import PartnerSimulator
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import registry_pb2 as rpb
from gateway.cli import main
from keys.timeutil import from_unix, to_iso

pytestmark = [
    pytest.mark.integration,  # a real gateway over mutual TLS (tests/support/tiers.py)
    pytest.mark.doc(
        'verifying.md "Submission receipts"', 'verifying.md "Command"', 'verifying.md "Input forms"'
    ),
]


@dataclass(frozen=True)
class Published:
    """What a partner holds after publishing key set 1, and the gateway's trust file."""

    trust: Path
    receipt_file: str  # --receipt-out
    json_output: str  # publish --json
    text_output: str  # publish, as it prints for people
    again: rpb.SubmissionReceipt  # the same bytes over gRPC: the duplicate's receipt
    reply: pb.RecogniseResponse  # an answer of Recognise: an attestation, not a receipt


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    from gateway.demo import prepare

    base = tmp_path_factory.mktemp("receipts")
    simulator = PartnerSimulator.generate()
    data_dir = base / "data"
    data_dir.mkdir()
    run(prepare(data_dir, simulator, NOW))
    pki = make_pki(base / "pki")
    partner = partner_for(SHOW)
    statement = base / "keyset-1.json"
    statement.write_bytes(
        partner.keyset(1, [listed(simulator.issuer(SHOW.code))], expires=NOW + timedelta(days=1))
    )
    receipt_out = base / "receipt-keyset-1.json"
    tls = ["--cert", str(pki["partner"].cert), "--key", str(pki["partner"].key)]
    tls += ["--ca", str(pki["partner"].ca)]

    async def scenario() -> tuple[str, str, rpb.SubmissionReceipt, pb.RecogniseResponse]:
        async with serving(data_dir, pki["server"]) as (gateway, port):
            await gateway.trust.install_partner(
                partner.partner_file(), actor="operator:test", now=NOW
            )
            at = ["partner-tools", "publish", "--gateway", f"localhost:{port}", *tls]
            # The blocking CLI in a thread, the server on this loop.
            code, json_output = await asyncio.to_thread(
                _cli, *at, "--json", "--receipt-out", str(receipt_out), str(statement)
            )
            assert code == 0, json_output
            code, text_output = await asyncio.to_thread(_cli, *at, str(statement))
            assert code == 0, text_output
            p, v = client(port, pki["partner"]), client(port, pki["verifier"])
            try:
                again = await p.publish(statement.read_bytes())
                reply = await v.recognise(simulator.issuer(SHOW.code).issue(
                    holder_id="110101199003070011", holder_name="TEST", colour=_green(),
                    issued_at=NOW - timedelta(hours=1), expires_at=NOW + timedelta(hours=20),
                ))  # fmt: skip
            finally:
                await p.close()
                await v.close()
            return json_output, text_output, again, reply

    json_output, text_output, again, reply = run(scenario())
    assert again.duplicate and again.HasField("attestation")
    assert reply.recognised, reply.reason
    trust = base / "trustgw-keys.json"
    assert _cli("keys", "export", "--data-dir", str(data_dir), "--out", str(trust))[0] == 0
    return Published(trust, receipt_out.read_text(), json_output, text_output, again, reply)


def _green() -> Any:
    from adapters.base import Colour

    return Colour.GREEN


def verify(
    capsys: pytest.CaptureFixture[str], fmt: str, trust: Path, text: str, *extra: str
) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    exit_code = main(["verify", "--format", fmt, "--trust", str(trust), "--json", *extra, text])
    out = capsys.readouterr().out
    return exit_code, (json.loads(out) if out else {})


def _text_line(output: str) -> str:
    """The compact JSON line of publish's text output (the signed receipt)."""
    (line,) = [line.strip() for line in output.splitlines() if line.strip().startswith("{")]
    return line


FORMS = {
    "receipt-out-file": lambda p: p.receipt_file,
    "publish-json-output": lambda p: p.json_output,
    "publish-text-output-line": lambda p: _text_line(p.text_output),
    "grpcurl-json-receipt": lambda p: json_format.MessageToJson(p.again),
    "json-proto-names": lambda p: json_format.MessageToJson(
        p.again, preserving_proto_field_name=True
    ),
    "json-attestation-only": lambda p: json_format.MessageToJson(p.again.attestation),
    "text-format-receipt": lambda p: text_format.MessageToString(p.again),
    "text-format-attestation": lambda p: text_format.MessageToString(p.again.attestation),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_documented_receipt_form_verifies(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, published: Published, form: str
) -> None:
    """Each form, as a file: accepted, and the claims are the signed facts of key set 1."""
    path = tmp_path / "receipt.txt"
    path.write_text(FORMS[form](published))
    exit_code, result = verify(capsys, "receipt", published.trust, str(path))
    assert (exit_code, result["reason"]) == (0, "OK"), result
    claims = result["claims"]
    assert (claims["typ"], claims["kind"], claims["region"]) == (
        "trustgw/receipt/v1",
        "keyset",
        SHOW.code,
    )
    # The first publish (--json, --receipt-out) and the retries (a duplicate: the first facts).
    first = form in ("receipt-out-file", "publish-json-output")
    assert (claims["version"], claims["duplicate"]) == (1, not first)
    assert claims["digest"] == published.again.digest


def test_a_receipt_on_standard_input_and_in_the_text_verdict(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, published: Published
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(published.json_output))
    exit_code, result = verify(capsys, "receipt", published.trust, "-")
    assert (exit_code, result["reason"]) == (0, "OK"), result
    capsys.readouterr()
    trust = str(published.trust)
    assert main(["verify", "--format", "receipt", "--trust", trust, published.receipt_file]) == 0
    out = capsys.readouterr().out
    assert out.startswith("accept: OK: ")
    assert f"  region: {SHOW.code}" in out.splitlines()


def test_a_receipt_is_valid_exactly_from_its_iat_to_its_exp(
    capsys: pytest.CaptureFixture[str], published: Published
) -> None:
    """verifying.md "When a signed output is valid": from the second it was signed (``iat``) to
    the signing key's ``not_after`` (``exp``), and at no instant outside."""
    _, result = verify(capsys, "receipt", published.trust, published.receipt_file)
    iat, exp = result["claims"]["iat"], result["claims"]["exp"]
    for at, expected in [
        (iat - 1, (1, "CODE_NOT_YET_VALID")),
        (iat, (0, "OK")),
        (exp, (0, "OK")),
        (exp + 1, (1, "CODE_EXPIRED")),
    ]:
        code, result = verify(
            capsys, "receipt", published.trust, published.receipt_file, "--at", str(at)
        )
        assert (code, result["reason"]) == expected, (at, result)


def test_each_format_reads_only_its_own_kind(
    capsys: pytest.CaptureFixture[str], published: Published
) -> None:
    """A receipt is not an attestation of a decision, nor the other way round: refused as
    MALFORMED although the signature is the gateway's."""
    code, result = verify(capsys, "attestation", published.trust, published.receipt_file)
    assert (code, result["reason"]) == (1, "MALFORMED")
    assert "not a trustgw attestation" in result["detail"]
    reply = json_format.MessageToJson(published.reply.attestation)
    code, result = verify(capsys, "receipt", published.trust, reply)
    assert (code, result["reason"]) == (1, "MALFORMED")
    assert "not a trustgw receipt" in result["detail"]
    # A whole RecogniseResponse is not a SubmissionReceipt.
    code, result = verify(
        capsys, "receipt", published.trust, json_format.MessageToJson(published.reply)
    )
    assert (code, result["reason"]) == (1, "MALFORMED")
    assert result["detail"].startswith("INPUT: ")


def _edited(published: Published, **members: Any) -> str:
    obj = json.loads(published.json_output)
    obj.update(members)
    return json.dumps(obj)


def _grpcurl(published: Published, drop: str = "", **members: Any) -> str:
    obj = json.loads(json_format.MessageToJson(published.again))
    obj.pop(drop, None)
    obj.update(members)
    return json.dumps(obj)


@pytest.mark.parametrize(
    ("build", "reason", "detail"),
    [
        pytest.param(lambda p: _grpcurl(p, drop="attestation"), "MALFORMED",
                     "SubmissionReceipt carries no attestation", id="receipt-without-attestation"),
        pytest.param(lambda p: _edited(p, signed_receipt=None), "MALFORMED",
                     "carries no signed receipt", id="publish-output-without-signed-receipt"),
        pytest.param(lambda p: _edited(p, extra=1), "MALFORMED",
                     "'extra' is not a member of the publish output", id="publish-output-extra"),
        pytest.param(lambda p: _edited(p, signed_receipt="x"), "MALFORMED",
                     "signed_receipt is not a JSON object", id="signed-receipt-not-an-object"),
        pytest.param(lambda p: _grpcurl(p, unknownField=1), "MALFORMED",
                     "'unknownField' is not a member of a SubmissionReceipt",
                     id="receipt-unknown-member"),
        pytest.param(
            lambda p: _grpcurl(p, attestation={
                **json.loads(json_format.MessageToJson(p.again.attestation)),
                "key_id": p.again.attestation.key_id}),
            "MALFORMED", "spells its member 'key_id' twice", id="key-id-spelled-twice",
        ),
        pytest.param(
            lambda p: _grpcurl(p, attestation={
                **json.loads(json_format.MessageToJson(p.again.attestation)),
                "signature": base64.b64encode(
                    bytes(64 - len(p.again.attestation.signature))
                    + p.again.attestation.signature[::-1]).decode()}),
            "SIGNATURE_INVALID", "", id="tampered-signature",
        ),
        pytest.param(lambda p: "[]", "MALFORMED", "not a JSON object", id="not-an-object"),
    ],
)  # fmt: skip
def test_receipt_input_is_strict(
    capsys: pytest.CaptureFixture[str], published: Published, build: Any, reason: str, detail: str
) -> None:
    """verifying.md "Input forms": the same rules as for attestations; a clear reason each."""
    code, result = verify(capsys, "receipt", published.trust, build(published))
    assert (code, result["reason"]) == (1, reason), result
    assert detail in result["detail"]
    if reason == "MALFORMED":
        assert result["detail"].startswith("INPUT: ")


def test_the_documented_receipt_members_are_the_protos() -> None:
    """verifying.md "Input forms": the SubmissionReceipt members the page lists."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "verifying.md").read_text("utf-8")
    listed = doc.split("for a `SubmissionReceipt`: ")[1].split(")")[0]
    names = set(re.findall(r"`([A-Za-z]+)`", listed))
    assert names == {f.json_name for f in rpb.SubmissionReceipt.DESCRIPTOR.fields}


def test_the_publish_output_members_are_the_ones_the_reader_accepts(
    published: Published,
) -> None:
    """Every member ``publish --json`` prints, for each kind of submission, is one the receipt
    reader knows (gateway/cli/_partner_rpc.py and _signed_input.PUBLISH_OUTPUT_MEMBERS)."""
    from gateway.cli._signed_input import PUBLISH_OUTPUT_MEMBERS

    printed = json.loads(published.json_output)
    assert set(printed) <= PUBLISH_OUTPUT_MEMBERS
    assert printed["accepted_at"] == to_iso(from_unix(published.again.accepted_at))
    for kind_only in ("kid", "revoked_at", "batch_id", "codes", "holders", "conversions_revoked"):
        assert kind_only in PUBLISH_OUTPUT_MEMBERS
