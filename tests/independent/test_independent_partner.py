"""A partner region onboarded and managed from docs/trust-registry.md alone (doc_partner.py):
the partner file through ``trustgw partner add`` (the printed fingerprint is the one §2
defines), then over gRPC with its own partner certificate: key sets, a retry, refusals of
bytes that are not canonical and of versions out of order, key revocation, code and holder
revocations computed per partners.md §1.6 and trust-registry.md §6, each change live for the
very next ``Recognise``; every receipt verified offline by the checkpoint of verifying.md.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import doc_partner as dp
import grpc
import pytest
from doc_checkpoint import Refused, TrustFile, verify_receipt
from doc_issuer import REGIONS, Holder, SigningKey, id_number, issue, now_utc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from test_independent_checkpoint import TRUSTGW, trustgw

from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.api.v1 import registry_pb2 as rpb
from gateway.api.v1 import registry_pb2_grpc as rpb_grpc

pytestmark = [
    pytest.mark.slow,
    pytest.mark.doc(
        "trust-registry.md §1",
        "trust-registry.md §2",
        "trust-registry.md §3",
        "trust-registry.md §4",
        "trust-registry.md §5",
        "trust-registry.md §6",
        "trust-registry.md §11",
        "trust-registry.md §12",
        "partners.md §1.6",
        'api.md "Decisions"',
        'verifying.md "Submission receipts"',
    ),
]
REGION = "110000"
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


@dataclass
class World:
    data_dir: Path
    partner: rpb_grpc.PartnerServiceStub
    verifier: pb_grpc.RecognitionServiceStub
    anchors: dp.Anchors
    fingerprint_printed: str


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    data_dir = tmp_path / "gw"
    trustgw("init", "--data-dir", str(data_dir), "--dev")
    anchors = dp.Anchors(
        [
            SigningKey.generate("EdDSA", "bj-anchor-1"),
            SigningKey.generate("ES256", "bj-anchor-2"),
            SigningKey.generate("EdDSA", "bj-anchor-3"),
        ],
        threshold=2,
    )
    file = tmp_path / "beijing-partner.json"
    file.write_bytes(dp.partner_file(REGION, "北京", "show", 86400, anchors))
    added = trustgw("partner", "add", "--data-dir", str(data_dir), "--file", str(file), "--json")
    printed = json.loads(added.stdout)["fingerprint"]
    trustgw("pki", "issue", "--data-dir", str(data_dir), "--role", "partner", "--name", REGION)
    trustgw("pki", "issue", "--data-dir", str(data_dir), "--role", "verifier", "--name", "cp")
    pki = data_dir / "pki"

    def creds(name: str) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            (pki / "ca.pem").read_bytes(),
            (pki / f"{name}.key").read_bytes(),
            (pki / f"{name}.pem").read_bytes(),
        )

    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTGW_")}
    process = subprocess.Popen(  # noqa: S603
        [
            TRUSTGW,
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        port = next(
            int(m.group(1))
            for line in process.stdout
            if (m := re.search(r"serving on [\d.]+:(\d+)", line))
        )
        partner_names = [p.stem for p in pki.glob("partner-*.pem")]
        with (
            grpc.secure_channel(f"localhost:{port}", creds(partner_names[0])) as partner,
            grpc.secure_channel(f"localhost:{port}", creds("verifier-cp")) as verifier,
        ):
            yield World(
                data_dir,
                rpb_grpc.PartnerServiceStub(partner),
                pb_grpc.RecognitionServiceStub(verifier),
                anchors,
                printed,
            )
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


def submit(method: Any, signed: bytes, signers: list[SigningKey]) -> rpb.SubmissionReceipt:
    return method(rpb.SubmissionRequest(submission=dp.envelope(signed, signers)), timeout=30)


def refusal(method: Any, signed: bytes, signers: list[SigningKey]) -> tuple[str, str]:
    with pytest.raises(grpc.RpcError) as raised:
        submit(method, signed, signers)
    error = raised.value
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    info = error_details_pb2.ErrorInfo()
    assert status is not None and status.details[0].Unpack(info)
    assert info.domain == "trustgw.gateway"
    return error.code().name, info.reason  # type: ignore[attr-defined]


def decide(world: World, code: str) -> str:
    """The decision's reason; its colour as api.md "Decisions" says (set once the code verified:
    its signature, by a key of its region valid and not revoked when it was issued)."""
    reply = world.verifier.Recognise(pb.RecogniseRequest(code=code), timeout=30)
    verified = reply.reason in ("RECOGNISED", "NOT_GREEN", "CODE_REVOKED", "CODE_EXPIRED")
    assert reply.colour == (pb.COLOUR_GREEN if verified else pb.COLOUR_UNSPECIFIED), reply
    return reply.reason


@pytest.mark.integration
def test_a_partner_manages_its_region_from_the_page_alone(world: World, tmp_path: Path) -> None:
    anchors = world.anchors.keys
    assert world.fingerprint_printed == world.anchors.fingerprint()  # §2

    now = now_utc()
    t = int(now.timestamp())
    signing = SigningKey.generate("EdDSA", "bj-2026-12")
    window = (t - 7 * 86400, t + 365 * 86400)
    v1 = dp.canonical(dp.keyset(REGION, 1, t + 86400, [(signing, *window)]))

    # §3: a threshold of 2 of the 3 anchors; one anchor alone is not enough
    assert refusal(world.partner.PublishKeySet, v1, anchors[:1]) == (
        "PERMISSION_DENIED",
        "THRESHOLD_NOT_MET",
    )
    receipt = submit(world.partner.PublishKeySet, v1, anchors[1:])
    assert (receipt.version, list(receipt.keys_added), receipt.duplicate) == (
        1,
        [signing.kid],
        False,
    )
    # a retry with other signatures over the same bytes is the first receipt (§7)
    again = submit(world.partner.PublishKeySet, v1, anchors[:2])
    assert again.duplicate and again.digest == receipt.digest == dp.hashlib.sha256(v1).hexdigest()

    # the key is live for the very next Recognise (§12)
    region = REGIONS[REGION]
    h = Holder(id_number(7), "王伟", "green", now - HOUR, now + 20 * HOUR, "bj-code-0001")
    code = issue(region, signing, h)
    assert decide(world, code) == "RECOGNISED"

    # §1 / §3: the signed bytes must be canonical
    statement = dp.keyset(REGION, 2, t + 86400, [(signing, *window)])
    not_canonical = {
        "white-space": json.dumps(statement, sort_keys=True).encode(),
        "unsorted": json.dumps(statement, separators=(",", ":")).encode(),
        "float": dp.canonical(statement).replace(b'"version":2', b'"version":2.0'),
        "integer-beyond-2^53": dp.canonical({**statement, "version": 2**53}),
        "needless-escape": dp.canonical({**statement, "region": REGION}).replace(
            b'"keys"', b'"\\u006beys"'
        ),
    }
    for name, signed in not_canonical.items():
        assert refusal(world.partner.PublishKeySet, signed, anchors[:2]) == (
            "INVALID_ARGUMENT",
            "MALFORMED",
        ), name

    # §4: versions move by one
    for version, reason in ((1, "VERSION_REPLAY"), (3, "VERSION_GAP")):
        body = dp.canonical(dp.keyset(REGION, version, t + 86400, []))
        assert refusal(world.partner.PublishKeySet, body, anchors[:2])[1] == reason
    # another region's statement from this partner's certificate (§8)
    other = dp.canonical(dp.keyset("120000", 1, t + 86400, []))
    assert refusal(world.partner.PublishKeySet, other, anchors[:2])[1] == "REGION_FORBIDDEN"
    # a key of the algorithm Beijing does not sign with (partners.md §1.3, §4)
    es = SigningKey.generate("ES256", "bj-es256")
    mismatched = dp.canonical(dp.keyset(REGION, 2, t + 86400, [(es, *window)]))
    assert refusal(world.partner.PublishKeySet, mismatched, anchors[:2]) == (
        "INVALID_ARGUMENT",
        "KEY_ALGORITHM_MISMATCH",
    )

    # §6: a code revocation names sha256("110000|<code id>"); live at once
    second = issue(region, signing, replace(h, code_id="bj-code-0002"))
    assert decide(world, second) == "RECOGNISED"
    batch = dp.revocations(
        REGION, "2026-12-02-0001", t - 60, [dp.code_hash(REGION, "bj-code-0002")], []
    )
    revoked = submit(world.partner.PublishRevocations, dp.canonical(batch), anchors[1:])
    assert (revoked.batch_id, revoked.codes, revoked.holders) == ("2026-12-02-0001", 1, 0)
    assert decide(world, second) == "CODE_REVOKED"
    assert decide(world, code) == "RECOGNISED"
    # the same batch id for a different batch
    reused = {**batch, "codes": [dp.code_hash(REGION, "bj-code-0003")]}
    assert refusal(world.partner.PublishRevocations, dp.canonical(reused), anchors[1:])[1] == (
        "BATCH_ID_REUSED"
    )

    # §6: a holder revoked from effective_at: codes issued before it are refused, after it not
    holder_id = id_number(8)
    before = issue(
        region, signing, Holder(holder_id, "李", "green", now - 2 * HOUR, now + 9 * HOUR, "bj-h-1")
    )
    after = issue(
        region,
        signing,
        Holder(holder_id, "李", "green", now - 10 * MINUTE, now + 9 * HOUR, "bj-h-2"),
    )
    holders = dp.revocations(
        REGION, "2026-12-02-0002", t - 3600, [], [dp.holder_hash(REGION, holder_id.lower())]
    )
    submit(world.partner.PublishRevocations, dp.canonical(holders), anchors[:2])
    assert decide(world, before) == "CODE_REVOKED"
    assert decide(world, after) == "RECOGNISED"

    # §5: a key revocation refuses codes issued at or after compromised_at
    compromise = {
        "type": "trustgw/key-revocation/v1",
        "region": REGION,
        "kid": signing.kid,
        "compromised_at": t - 30 * 60,
    }
    key_receipt = submit(world.partner.RevokeKey, dp.canonical(compromise), anchors[:2])
    assert (key_receipt.key_id, key_receipt.revoked_at) == (signing.kid, t - 30 * 60)
    assert decide(world, code) == "RECOGNISED"  # issued an hour ago, before the compromise
    late = issue(region, signing, replace(h, code_id="bj-code-0004", issued_at=now - 10 * MINUTE))
    assert decide(world, late) == "KEY_REVOKED"
    unknown = {**compromise, "kid": "never-had-it"}
    assert refusal(world.partner.RevokeKey, dp.canonical(unknown), anchors[:2])[1] == "NOT_FOUND"

    # verifying.md "Submission receipts": each verifies offline with the exported keys
    keys_file = tmp_path / "trustgw-keys.json"
    trustgw("keys", "export", "--data-dir", str(world.data_dir), "--out", str(keys_file))
    trust = TrustFile.from_json(keys_file.read_bytes())
    for r in (receipt, again, revoked, key_receipt):
        a = r.attestation
        claims = verify_receipt(
            trust, a.payload, a.key_id, a.alg, a.signature, json.loads(a.payload)["iat"]
        )
        assert claims["region"] == REGION and claims["digest"] == r.digest
        assert claims["duplicate"] == r.duplicate and claims["exp"] >= claims["iat"]
        with pytest.raises(Refused):
            verify_receipt(trust, a.payload, a.key_id, a.alg, a.signature, claims["exp"] + 1)
