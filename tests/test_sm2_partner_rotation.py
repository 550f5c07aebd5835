"""An SM2 partner rotates its code-signing key over gRPC while checkpoints keep recognising: 0
failed calls (issue 14 part 2, "rotation of an SM2 key with 0 failed calls").

docs/trust-registry.md §4 (key sets replace the region's keys) and docs/crypto.md: Heilongjiang
(230000) signs with SM2 and its anchors are SM2 too. The partner publishes version 2 listing the
old and the new key, moves its issuers to the new key, and only once no code of the old key is
in flight publishes version 3 without it. Recognition never fails on the way; old-key codes are
refused after version 3 (the rotation took effect), and every answer's attestation names the
partner key that verified its code.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import grpc
import pytest

pytest.importorskip("tongsuopy", reason="SM2 needs the tongsuopy wheel (docs/crypto.md)")

from registry_grpc_support import NOW, listed
from support.aio import run, serving

from adapters.base import Colour
from adapters.simulator import PartnerIssuer, fake_holder
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.api.v1 import registry_pb2 as rpb
from gateway.api.v1 import registry_pb2_grpc as rpb_grpc
from keys.crypto import Algorithm
from keys.model import Mode
from keys.partner import PartnerSigner, signing_key

pytestmark = [pytest.mark.integration, pytest.mark.doc("trust-registry.md §4")]

REGION = "230000"
DAY = timedelta(days=1)
WORKERS = 4


@pytest.mark.slow
def test_an_sm2_partner_key_rotation_under_load_fails_no_call(prepared_dir, simulator) -> None:
    import random

    data_dir = prepared_dir(NOW)
    old = simulator.issuer(REGION)
    assert old.spec.signing_alg is Algorithm.SM2
    partner = PartnerSigner.generate(REGION, alg=Algorithm.SM2, mode=Mode.CONVERT)
    new_entry, new_private = signing_key("hlj-next", NOW - DAY, NOW + 30 * DAY, alg=Algorithm.SM2)
    new = PartnerIssuer(old.spec, new_private, "hlj-next")
    rng = random.Random(5)

    def code(issuer: PartnerIssuer) -> str:
        holder_id, name = fake_holder(rng)
        return issuer.issue(
            holder_id=holder_id, holder_name=name, colour=Colour.GREEN,
            issued_at=NOW - timedelta(minutes=30), expires_at=NOW + DAY,
            code_id=f"{rng.getrandbits(64):016x}",
        )  # fmt: skip

    async def scenario() -> dict[str, Any]:
        async with serving(data_dir) as (gateway, port):
            await gateway.trust.install_partner(partner.partner_file(), actor="op:t", now=NOW)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                recognition = pb_grpc.RecognitionServiceStub(channel)
                partners = rpb_grpc.PartnerServiceStub(channel)

                async def publish(version: int, keys: list[Any]) -> rpb.SubmissionReceipt:
                    envelope = partner.keyset(version, keys, expires=NOW + 7 * DAY)
                    request = rpb.SubmissionRequest(submission=envelope)
                    return await partners.PublishKeySet(request, timeout=10)

                await publish(1, [listed(old)])
                results: list[tuple[str, str]] = []  # (reason, partner kid in the attestation)
                errors: list[str] = []
                use_new = asyncio.Event()
                moved = [asyncio.Event() for _ in range(WORKERS)]
                stop = asyncio.Event()
                loaded = asyncio.Event()
                after = asyncio.Event()  # 20 answers after version 3
                rotated_at: list[int] = []

                async def worker(n: int) -> None:
                    while not stop.is_set():
                        issuer = new if use_new.is_set() else old
                        try:
                            answer = await recognition.Recognise(
                                pb.RecogniseRequest(code=code(issuer)), timeout=10
                            )
                        except grpc.aio.AioRpcError as exc:
                            errors.append(f"{exc.code()}: {exc.details()}")
                            continue
                        kid = ""
                        if answer.attestation.payload:
                            kid = json.loads(answer.attestation.payload)["code_kid"]
                        results.append((answer.reason, kid))
                        if issuer is new:
                            moved[n].set()
                        if len(results) >= 20:
                            loaded.set()
                        if rotated_at and len(results) >= rotated_at[0] + 20:
                            after.set()

                async def rotate() -> list[rpb.SubmissionReceipt]:
                    try:
                        await loaded.wait()
                        both = await publish(2, [listed(old), new_entry])
                        use_new.set()  # the partner's issuers move to the new key
                        # No old-key code is in flight once every worker answered a new one.
                        await asyncio.gather(*(m.wait() for m in moved))
                        only_new = await publish(3, [new_entry])
                        rotated_at.append(len(results))
                        await after.wait()  # the load goes on after the rotation
                        return [both, only_new]
                    finally:
                        stop.set()

                *_, receipts = await asyncio.gather(*(worker(n) for n in range(WORKERS)), rotate())
                late_old = await recognition.Recognise(
                    pb.RecogniseRequest(code=code(old)), timeout=10
                )
                return {
                    "results": results,
                    "errors": errors,
                    "receipts": receipts,
                    "late_old": late_old.reason,
                }

    outcome = run(scenario())
    assert outcome["errors"] == []
    reasons = {reason for reason, _ in outcome["results"]}
    assert reasons == {"RECOGNISED"}, reasons
    kids = [kid for _, kid in outcome["results"]]
    assert set(kids) == {old.kid, "hlj-next"}
    assert kids[-1] == "hlj-next"
    both, only_new = outcome["receipts"]
    assert (both.version, list(both.keys_added)) == (2, ["hlj-next"])
    assert (only_new.version, list(only_new.keys_removed)) == (3, [old.kid])
    assert outcome["late_old"] == "KEY_UNKNOWN"  # after version 3, the old key verifies nothing
