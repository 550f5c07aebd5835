"""The server's lifecycle, for real: ``python -m gateway.cli serve`` in a subprocess, SIGTERM
under load, the drain, the second signal.

Specification: on SIGTERM/SIGINT health turns NOT_SERVING at once, calls already accepted are
answered, new calls fail with UNAVAILABLE (never accepted), and the process exits 0 within the
grace period; a second signal stops it at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.clock import REAL_NOW

from adapters.regions import REGION_SPECS
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from keys.model import Mode

NOW = REAL_NOW  # a serving gateway reads the real clock
REPO = Path(__file__).resolve().parent.parent
CONVERT = next(s.code for s in REGION_SPECS if s.mode is Mode.CONVERT)
SHOW = next(s.code for s in REGION_SPECS if s.mode is Mode.SHOW)
GRACE = 8.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]


@dataclass
class Server:
    process: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    async def exit_code(self, within: float) -> int:
        """The exit status; fails when the process has not exited ``within`` seconds."""
        return await asyncio.wait_for(self.process.wait(), within)


@asynccontextmanager
async def served(data_dir: Path, *extra: str) -> AsyncIterator[Server]:
    """``python -m gateway.cli serve --insecure`` on a free port, until it exits."""
    log = data_dir / "serve.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "serve", "--insecure",
            "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
            "--grace-period", str(GRACE), "--log-format", "json", *extra,
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        text = line.decode()
        assert text.startswith("trustgw serving on 127.0.0.1:"), (text, log.read_text())
        port = int(text.split()[3].rsplit(":", 1)[1])
        yield Server(process, port, log)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def watch_health(target: str, seen: list[int], serving: asyncio.Event) -> None:
    """Record every status the health service pushes, until the stream ends."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            async for reply in stub.Watch(health_pb2.HealthCheckRequest(service="")):
                seen.append(reply.status)
                if reply.status == SERVING:
                    serving.set()
        except grpc.aio.AioRpcError:
            pass


@pytest.mark.doc('api.md "Shutdown, as seen by a client"')
def test_sigterm_under_load_drains_every_accepted_call_and_exits_0(codes, prepared_dir) -> None:
    data_dir = prepared_dir(NOW)
    makers = [codes(CONVERT, NOW), codes(SHOW, NOW)]

    async def scenario() -> None:
        async with served(data_dir) as server:
            health: list[int] = []
            up = asyncio.Event()
            watcher = asyncio.create_task(watch_health(server.target, health, up))
            await asyncio.wait_for(up.wait(), 30)
            outcomes: Counter[str] = Counter()
            wrong: list[str] = []
            completed_before_signal = asyncio.Event()
            stream_answers: list[str] = []
            stream_sent: list[str] = []

            async with grpc.aio.insecure_channel(server.target) as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)

                async def worker(n: int) -> None:
                    make = makers[n % 2]
                    i = 0
                    while True:
                        i += 1
                        request_id = f"w{n}-{i}"
                        # Fresh codes: convert-mode ones wait for a new conversion to commit.
                        request = pb.RecogniseRequest(request_id=request_id, code=make())
                        try:
                            response = await stub.Recognise(request, timeout=30)
                        except grpc.aio.AioRpcError as exc:
                            outcomes[exc.code().name] += 1
                            if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                                wrong.append(f"{request_id}: {exc.code().name} {exc.details()}")
                            return  # the server no longer accepts calls
                        outcomes["OK"] += 1
                        if response.request_id != request_id or response.reason != "RECOGNISED":
                            wrong.append(f"{request_id}: {response.reason}")
                        if outcomes["OK"] >= 300:
                            completed_before_signal.set()

                async def stream() -> None:
                    """A stream accepted before SIGTERM keeps sending during the drain, then
                    half-closes: every request on it is answered, in order."""
                    make = makers[0]
                    call = stub.RecogniseStream(timeout=30)
                    for i in range(5):
                        stream_sent.append(f"s-{i}")
                        await call.write(pb.RecogniseRequest(request_id=f"s-{i}", code=make()))
                    stream_answers.append((await call.read()).request_id)  # accepted
                    await terminated.wait()
                    for i in range(5, 40):
                        stream_sent.append(f"s-{i}")
                        await call.write(pb.RecogniseRequest(request_id=f"s-{i}", code=make()))
                    await call.done_writing()
                    while (answer := await call.read()) is not grpc.aio.EOF:
                        assert answer.reason == "RECOGNISED", answer.reason
                        stream_answers.append(answer.request_id)

                terminated = asyncio.Event()
                workers = [asyncio.create_task(worker(n)) for n in range(16)]
                streamer = asyncio.create_task(stream())
                await asyncio.wait_for(completed_before_signal.wait(), 60)
                server.signal(signal.SIGTERM)
                terminated.set()
                # within the grace period (and the slack of a loaded machine)
                code = await server.exit_code(within=GRACE + 20)
                await asyncio.gather(*workers, streamer)
            await asyncio.wait_for(watcher, 10)

            log = server.log.read_text()
            answered = f"{len(stream_answers)}/{len(stream_sent)}"
            print(f"\nSIGTERM under load: {dict(outcomes)}; stream answered {answered}; "
                  f"exit {code}")  # fmt: skip
            assert code == 0, log
            assert wrong == []  # every completed call had a proper answer; no other status
            assert outcomes["OK"] >= 300
            assert outcomes["UNAVAILABLE"] == 16  # each worker's first call after the drain
            assert stream_answers == stream_sent  # nothing accepted was lost
            assert health[0] == SERVING and health[-1] == NOT_SERVING
            assert "shutting down" in log

    asyncio.run(scenario())


def test_sigint_drains_like_sigterm(prepared_dir) -> None:
    data_dir = prepared_dir(NOW)

    async def scenario() -> None:
        async with served(data_dir) as server:
            server.signal(signal.SIGINT)
            code = await server.exit_code(within=GRACE + 20)
            assert code == 0, server.log.read_text()

    asyncio.run(scenario())


@pytest.mark.doc('api.md "Shutdown, as seen by a client"')
def test_a_second_signal_stops_at_once(codes, prepared_dir) -> None:
    """A stream left open would hold the drain for the whole grace period; the second signal
    does not wait for it."""
    data_dir = prepared_dir(NOW)
    make = codes(SHOW, NOW)

    async def scenario() -> None:
        async with served(data_dir, "--grace-period", "60") as server:
            async with grpc.aio.insecure_channel(server.target) as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                call = stub.RecogniseStream(timeout=120)
                await call.write(pb.RecogniseRequest(request_id="open", code=make()))
                assert (await call.read()).request_id == "open"
                health: list[int] = []
                up = asyncio.Event()
                watcher = asyncio.create_task(watch_health(server.target, health, up))
                await asyncio.wait_for(up.wait(), 30)
                server.signal(signal.SIGTERM)
                # Health turns NOT_SERVING and its watch ends once the drain has begun: the
                # first signal has been handled, so the next one is a second signal.
                await asyncio.wait_for(watcher, 30)
                assert health[-1] == NOT_SERVING
                assert server.process.returncode is None  # draining, for up to 60 s
                server.signal(signal.SIGTERM)
                code = await server.exit_code(within=20)  # not the 60 s of the drain
                call.cancel()
            assert code == 130

    asyncio.run(scenario())


@pytest.mark.doc('api.md "Health"', 'api.md "Shutdown, as seen by a client"')
def test_the_drain_in_process_health_new_calls_and_open_streams(codes, prepared_dir) -> None:
    """During the drain: Check answers NOT_SERVING, Watch streams end, a new call is refused
    UNAVAILABLE with its request id, and an open stream is served until it half-closes."""
    from gateway.grpc.server import build_server
    from gateway.runtime.config import GatewayConfig
    from gateway.runtime.gateway import Gateway

    data_dir = prepared_dir(NOW)
    make = codes(SHOW, NOW)

    async def scenario() -> None:
        gateway = await Gateway.open(GatewayConfig(data_dir=data_dir))
        running = await build_server(gateway, "127.0.0.1:0")
        target = f"127.0.0.1:{running.port}"
        try:
            async with grpc.aio.insecure_channel(target) as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
                assert (await watch.read()).status == SERVING
                stream = stub.RecogniseStream(timeout=60)
                await stream.write(pb.RecogniseRequest(request_id="before", code=make()))
                assert (await stream.read()).request_id == "before"

                stopping = asyncio.create_task(running.stop(60))
                assert (await watch.read()).status == NOT_SERVING
                assert await watch.read() is grpc.aio.EOF  # ended, not holding the drain
                assert await watch.code() is grpc.StatusCode.OK
                check = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                assert check.status == NOT_SERVING

                refused = stub.Recognise(
                    pb.RecogniseRequest(code=make()), metadata=(("x-request-id", "late-1"),)
                )
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await refused
                assert info.value.code() is grpc.StatusCode.UNAVAILABLE
                assert "shutting down" in (info.value.details() or "")
                assert ("x-request-id", "late-1") in tuple(info.value.trailing_metadata() or ())

                await stream.write(pb.RecogniseRequest(request_id="during", code=make()))
                answer = await stream.read()
                assert (answer.request_id, answer.reason) == ("during", "RECOGNISED")
                assert not stopping.done()  # the open stream holds the drain
                await stream.done_writing()
                assert await stream.read() is grpc.aio.EOF
                await asyncio.wait_for(stopping, 30)  # far less than the grace of 60 s
        finally:
            await running.stop(0)
            await gateway.close()

    asyncio.run(scenario())
