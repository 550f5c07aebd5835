"""Rotating the gateway's own keys while it serves: no restart, no failed request."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import grpc
from conftest import run, serving

from adapters.regions import REGION_SPECS
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.cli import main
from keys.model import Mode

NOW = datetime.now(UTC).replace(microsecond=0)
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

                async def worker() -> None:
                    while queue:
                        request = queue.pop()
                        try:
                            responses.append(await stub.Recognise(request, timeout=10))
                        except grpc.aio.AioRpcError as exc:
                            errors.append(f"{exc.code()}: {exc.details()}")
                        await asyncio.sleep(0.002)

                async def rotate() -> dict[str, str]:
                    await asyncio.sleep(0.2)
                    new = {}
                    for role in ("attest", "issue"):
                        # --activate-in 0: signs once this gateway's watchers have the key
                        args = ["keys", "rotate", "--data-dir", str(data_dir), "--role", role,
                                "--json", "--activate-in", "0"]
                        assert await asyncio.to_thread(main, args) == 0
                        new[role] = json.loads(capsys.readouterr().out)["kid"]
                    return new

                *_, new = await asyncio.gather(*(worker() for _ in range(8)), rotate())
                # Within a few refresh intervals the running server signs with the new keys.
                deadline = time.monotonic() + 10
                while True:
                    late = await stub.Recognise(pb.RecogniseRequest(code=make()), timeout=10)
                    kids = (late.attestation.key_id, late.converted.key_id)
                    if kids == (new["attest"], new["issue"]) or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.05)
                responses.append(late)
                return responses, errors, new

    responses, errors, new = run(scenario())
    assert errors == []
    assert len(responses) == len(requests) + 1
    assert all(r.reason == "RECOGNISED" for r in responses)
    late = responses[-1]
    assert late.attestation.key_id == new["attest"]
    assert late.converted.key_id == new["issue"]
    kids = {r.attestation.key_id for r in responses}
    assert len(kids) == 2  # old and new keys both served, without a gap
