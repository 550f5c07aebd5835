"""Rotating the gateway's own keys while it serves: no restart, no failed request."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from support.aio import run, serving
from support.clock import REAL_NOW
from support.wait import eventually

from adapters.regions import REGION_SPECS
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.cli import main
from keys.model import Mode

pytestmark = pytest.mark.integration  # a real server (tests/support/tiers.py)

NOW = REAL_NOW  # a serving gateway reads the real clock
CONVERT = next(s.code for s in REGION_SPECS if s.mode is Mode.CONVERT)


def test_rotating_attest_and_issue_keys_under_load_fails_no_request(
    codes, prepared_dir, capsys
) -> None:
    data_dir = prepared_dir(NOW)
    make = codes(CONVERT, NOW)
    requests = [pb.RecogniseRequest(request_id=str(n), code=make()) for n in range(600)]

    async def scenario() -> tuple[list[pb.RecogniseResponse], list[str], dict[str, str]]:
        async with serving(data_dir) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                responses: list[pb.RecogniseResponse] = []
                errors: list[str] = []
                queue = list(requests)
                serving_load = asyncio.Event()  # the old keys have answered some of the load
                rotated = asyncio.Event()

                async def worker() -> None:
                    # the load lasts at least until both rotations are done
                    while queue or not rotated.is_set():
                        request = queue.pop() if queue else pb.RecogniseRequest(code=make())
                        try:
                            responses.append(await stub.Recognise(request, timeout=10))
                        except grpc.aio.AioRpcError as exc:
                            errors.append(f"{exc.code()}: {exc.details()}")
                        if len(responses) >= 50:
                            serving_load.set()

                async def rotate() -> dict[str, str]:
                    await serving_load.wait()
                    new = {}
                    try:
                        for role in ("attest", "issue"):
                            # --activate-in 0: signs once this gateway's watchers have the key
                            args = ["keys", "rotate", "--data-dir", str(data_dir), "--role",
                                    role, "--json", "--activate-in", "0"]  # fmt: skip
                            assert await asyncio.to_thread(main, args) == 0
                            new[role] = json.loads(capsys.readouterr().out)["kid"]
                    finally:
                        rotated.set()
                    return new

                *_, new = await asyncio.gather(*(worker() for _ in range(8)), rotate())

                # Within a few refresh intervals the running server signs with the new keys.
                async def signed_by_new_keys() -> pb.RecogniseResponse | None:
                    late = await stub.Recognise(pb.RecogniseRequest(code=make()), timeout=10)
                    kids = (late.attestation.key_id, late.converted.key_id)
                    return late if kids == (new["attest"], new["issue"]) else None

                late = await eventually(signed_by_new_keys, what="the new keys sign")
                responses.append(late)
                return responses, errors, new

    responses, errors, new = run(scenario())
    assert errors == []
    assert len(responses) > len(requests)
    assert all(r.reason == "RECOGNISED" for r in responses)
    late = responses[-1]
    assert late.attestation.key_id == new["attest"]
    assert late.converted.key_id == new["issue"]
    kids = {r.attestation.key_id for r in responses}
    assert len(kids) == 2  # old and new keys both served, without a gap
