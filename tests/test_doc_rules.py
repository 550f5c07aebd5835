"""Rules of the contract pages that no other test pinned on its own (see tests/doc_contract.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest


@pytest.mark.integration
@pytest.mark.doc('verifying.md "Python API"')
@pytest.mark.parametrize("module", ["gateway.tokens", "keys.trustlist"])
def test_the_offline_verifiers_import_no_grpc(module: str) -> None:
    """verifying.md: "The module imports no gRPC" -- a checkpoint can verify without it."""
    probe = (
        f"import sys, {module}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('grpc', 'grpc_status', 'grpc_health', 'grpc_reflection')))"
    )
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def _replace_keyring(db: Path, made_at: datetime) -> None:
    """The store's gateway keyring replaced by development keys made at ``made_at``."""
    import sqlite3

    from keys import gatewaykeys
    from keys.store import SQLiteStore

    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM gateway_keyring")
        conn.execute("DELETE FROM gateway_keyring_meta")
    conn.close()

    async def create() -> None:
        store = await SQLiteStore.open(db)
        try:
            await gatewaykeys.create_or_join(store, dev=True, passphrase=None, now=made_at)
        finally:
            await store.close()

    asyncio.run(create())


@pytest.mark.integration
@pytest.mark.doc('api.md "RPC errors"', 'api.md "Health"', 'verifying.md "Keys and rotation"')
def test_without_a_valid_signing_key_recognise_is_failed_precondition_until_rotated(
    tmp_path, simulator
) -> None:
    """api.md: ``CONFIGURATION`` (FAILED_PRECONDITION) for a code that would be recognised while
    no gateway ``attest``/``issue`` key is valid now, health NOT_SERVING; refused codes are still
    decisions; ``keys rotate`` (``--activate-in 0``) brings both back without a restart."""
    import random
    from datetime import timedelta

    import grpc
    from google.rpc import error_details_pb2
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_status import rpc_status
    from support.aio import run, serving
    from support.clock import REAL_NOW
    from support.wait import eventually

    from adapters.base import Colour
    from adapters.simulator import fake_holder
    from gateway.api.v1 import recognition_pb2 as pb
    from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
    from gateway.cli import main
    from gateway.demo import prepare

    now = REAL_NOW  # the server reads the real clock
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    run(prepare(data_dir, simulator, now))
    _replace_keyring(data_dir / "trustgw.db", now - timedelta(days=400))  # expired a month ago
    holder_id, name = fake_holder(random.Random(3))
    green = simulator.issuer("110000").issue(
        holder_id=holder_id,
        holder_name=name,
        colour=Colour.GREEN,
        issued_at=now - timedelta(hours=1),
        expires_at=now + timedelta(hours=5),
    )

    async def scenario() -> None:
        async with serving(data_dir) as (_gateway, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                stub = pb_grpc.RecognitionServiceStub(channel)

                async def status() -> int:
                    return (await health.Check(health_pb2.HealthCheckRequest(), timeout=10)).status

                assert await status() == health_pb2.HealthCheckResponse.NOT_SERVING
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.Recognise(pb.RecogniseRequest(code=green), timeout=10)
                assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
                info = error_details_pb2.ErrorInfo()
                assert rpc_status.from_call(raised.value).details[0].Unpack(info)
                assert info.reason == "CONFIGURATION"
                refused = await stub.Recognise(pb.RecogniseRequest(code="BJ1:xx"), timeout=10)
                assert refused.reason == "MALFORMED"

                for role in ("attest", "issue"):
                    argv = ["keys", "rotate", "--data-dir", str(data_dir), "--role", role]
                    # The CLI runs its own event loop: off this one, as another process would.
                    assert await asyncio.to_thread(main, [*argv, "--activate-in", "0"]) == 0

                async def serving_again() -> bool:
                    return await status() == health_pb2.HealthCheckResponse.SERVING

                await eventually(serving_again, what="health SERVING after the rotation")
                reply = await stub.Recognise(pb.RecogniseRequest(code=green), timeout=10)
                assert reply.reason == "RECOGNISED"

    run(scenario())


@pytest.mark.doc('api.md "Health"')
def test_health_follows_a_gateway_that_recovered_before_the_first_look() -> None:
    """The servicer starts as the gateway was when the server started (NOT_SERVING); a gateway
    healthy again by the watcher's first look must still turn it SERVING."""
    import asyncio
    from types import SimpleNamespace

    from grpc_health.v1 import health_pb2
    from support.wait import eventually

    from gateway.grpc.health import DrainingHealthServicer, watch_health

    async def scenario() -> None:
        servicer = DrainingHealthServicer()
        await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        gateway = SimpleNamespace(healthy=True)  # recovered before the first look
        watcher = asyncio.create_task(watch_health(gateway, servicer, (), serving=False))  # type: ignore[arg-type]
        try:

            async def serving() -> bool:
                reply = await servicer.Check(health_pb2.HealthCheckRequest(), None)
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

            await eventually(serving, what="SERVING once the gateway is healthy")
        finally:
            watcher.cancel()

    asyncio.run(scenario())
