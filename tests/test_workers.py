"""``trustgw serve --workers N`` for real (issue 10 point 4): N worker processes on one port under
one supervisor, ``python -m gateway.cli serve --workers 2`` in a subprocess.

Specification (docs/operations.md, "Processes and workers"): both workers accept connections on
the one port; the supervisor's metrics endpoint counts the calls of all of them; a worker killed
with SIGKILL is restarted, with a log line naming it and how it ended, and serves again; SIGTERM
or SIGINT drains every worker (an in-flight stream is answered to its end) and everything exits
0; only worker 0 runs the periodic purge; concurrent workers record one trust-list version.

Which worker holds a connection is read from the kernel (``/proc``): a worker's accepted
sockets are its own file descriptors. Nothing here waits for a fixed time: log lines, health
pushes and process exits are awaited with deadlines.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from support.clock import REAL_NOW

from adapters.regions import REGION_SPECS
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.runtime.config import GatewayConfig
from gateway.runtime.retention import RetentionPolicy
from gateway.runtime.supervisor import WorkerSlot, describe_exit, reserve_port, worker_config
from keys.errors import ConfigurationError
from keys.model import Mode

NOW = REAL_NOW  # a serving gateway reads the real clock
REPO = Path(__file__).resolve().parent.parent
SHOW = next(s.code for s in REGION_SPECS if s.mode is Mode.SHOW)
CONVERT = next(s.code for s in REGION_SPECS if s.mode is Mode.CONVERT)
GRACE = 8.0
DEADLINE = 60.0  # only a failing run waits this long
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# A channel of its own connection: grpc shares subchannels between equal channels otherwise.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT and /proc"),
]


# --- the pure parts ---------------------------------------------------------------------------


def test_only_worker_0_runs_the_periodic_purge_and_no_worker_serves_metrics() -> None:
    config = GatewayConfig(
        data_dir=Path("/gw"),
        listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:9100",
        retention=RetentionPolicy(interval_seconds=3600),
    )
    first = worker_config(config, WorkerSlot(0, 3, "127.0.0.1:5000"))
    others = [worker_config(config, WorkerSlot(i, 3, "127.0.0.1:5000")) for i in (1, 2)]
    assert first.retention.interval_seconds == 3600
    assert [c.retention.interval_seconds for c in others] == [0, 0]
    assert {c.listen for c in (first, *others)} == {"127.0.0.1:5000"}
    assert {c.metrics_listen for c in (first, *others)} == {None}  # the supervisor serves them
    assert first.retention.recognitions_days == config.retention.recognitions_days


@pytest.mark.parametrize(
    ("code", "text"),
    [
        pytest.param(0, "exit status 0", id="clean"),
        pytest.param(1, "exit status 1", id="error"),
        pytest.param(-signal.SIGKILL, "killed by SIGKILL", id="sigkill"),
        pytest.param(-signal.SIGSEGV, "killed by SIGSEGV", id="segfault"),
    ],
)
def test_a_worker_exit_is_described_as_an_operator_reads_it(code: int, text: str) -> None:
    assert describe_exit(code) == text


def test_the_port_is_reserved_and_shared_only_with_reuseport_sockets() -> None:
    import socket

    held, port = reserve_port("127.0.0.1:0")
    try:
        assert port > 0
        again, same = reserve_port(f"127.0.0.1:{port}")  # a worker's way: SO_REUSEPORT too
        again.close()
        assert same == port
        plain = socket.socket()
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))  # anyone else is refused
        plain.close()
    finally:
        held.close()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(ConfigurationError, match="in use"):
            reserve_port(f"127.0.0.1:{taken.getsockname()[1]}")
    finally:
        taken.close()


# --- a supervised gateway -------------------------------------------------------------------


@dataclass
class Supervised:
    """A running ``serve --workers N``: its process, port, metrics port and log."""

    process: asyncio.subprocess.Process
    port: int
    metrics_port: int
    lines: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def line(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The first log line (a JSON object) for which ``predicate`` holds, waited for."""

        def found() -> dict[str, Any] | None:
            return next((line for line in self.lines if predicate(line)), None)

        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(found), DEADLINE)
        result = found()
        assert result is not None, what
        return result

    def messages(self) -> list[str]:
        return [str(line.get("msg", line)) for line in self.lines]

    async def pid_of(self, index: int, *, after: int = 0) -> int:
        """The pid of worker ``index`` once it serves (a pid other than ``after``)."""
        prefix = f"worker {index} (pid "

        def serving(line: dict[str, Any]) -> bool:
            msg = str(line.get("msg", ""))
            return msg.startswith(prefix) and " serving on port " in msg and _pid(msg) != after

        return _pid(str((await self.line(serving, f"worker {index} serving"))["msg"]))

    def metrics(self) -> dict[str, list[Any]]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        samples: dict[str, list[Any]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append(sample)
        return samples

    def recognitions(self) -> float:
        return sum(s.value for s in self.metrics().get("trustgw_recognitions_total", []))


def _pid(msg: str) -> int:
    return int(msg.split("(pid ", 1)[1].split(")", 1)[0])


@asynccontextmanager
async def supervised(data_dir: Path, *extra: str, workers: int = 2) -> AsyncIterator[Supervised]:
    """``python -m gateway.cli serve --workers N --insecure`` on free ports, until it exits."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", "--insecure", "--workers", str(workers),
        "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
        "--metrics-listen", "127.0.0.1:0", "--grace-period", str(GRACE),
        "--log-format", "json", *extra,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    collected: list[dict[str, Any]] = []
    changed = asyncio.Condition()

    async def collect(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").strip()
            try:
                entry = json.loads(text)
            except ValueError:
                entry = {"msg": text}
            async with changed:
                collected.append(entry if isinstance(entry, dict) else {"msg": text})
                changed.notify_all()

    reader = asyncio.create_task(collect(process.stderr))
    try:
        first = (await asyncio.wait_for(process.stdout.readline(), DEADLINE)).decode()
        assert first.startswith("trustgw serving on 127.0.0.1:"), (first, collected)
        assert f"{workers} workers)" in first
        second = (await asyncio.wait_for(process.stdout.readline(), DEADLINE)).decode()
        assert second.startswith("metrics on http://127.0.0.1:"), second
        port = int(first.split()[3].rsplit(":", 1)[1])
        metrics_port = int(second.split()[2].rsplit(":", 1)[1].split("/", 1)[0])
        yield Supervised(process, port, metrics_port, collected, changed)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await asyncio.wait_for(reader, DEADLINE)


def _sockets_of(pid: int) -> set[str]:
    """The inodes of the sockets process ``pid`` holds."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def connections_by_worker(port: int, pids: list[int]) -> dict[int, int]:
    """How many established connections to ``port`` each worker holds (from /proc)."""
    established = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # ESTABLISHED, server side
                established.add(fields[9])
    return {pid: len(_sockets_of(pid) & established) for pid in pids}


async def call_on_new_connections(
    server: Supervised, make: Callable[[], str], pids: list[int], channels: list[Any]
) -> int:
    """Open connections (one call each, answered) until every worker in ``pids`` holds one;
    the number of calls made. The kernel spreads connections over the workers, so this ends."""
    calls = 0
    for n in range(200):  # P(one worker gets none of 200) = 2**-199 each
        channel = grpc.aio.insecure_channel(server.target, options=OWN_CONNECTION)
        channels.append(channel)
        stub = pb_grpc.RecognitionServiceStub(channel)
        reply = await stub.Recognise(
            pb.RecogniseRequest(request_id=f"c{n}", code=make()), timeout=30
        )
        assert reply.reason == "RECOGNISED", reply.reason
        calls += 1
        held = connections_by_worker(server.port, pids)
        if all(held.values()):
            return calls
    raise AssertionError(f"connections never reached every worker: {held}")


async def _close(channels: list[Any]) -> None:
    for channel in channels:
        await channel.close()


# --- the scenarios ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """Where a scenario's gateway keeps its store: the data directory and the serve flags."""

    data_dir: Path
    flags: tuple[str, ...]
    url: str | None = None  # PostgreSQL

    def trustlist_versions(self) -> list[tuple[int, str]]:
        query = "SELECT version, digest FROM trustlist_versions"
        if self.url is None:
            with sqlite3.connect(self.data_dir / "trustgw.db") as conn:
                return conn.execute(query).fetchall()
        import psycopg

        with psycopg.connect(self.url) as conn:
            return [(int(v), str(d)) for v, d in conn.execute(query).fetchall()]


def _pg_url(request: pytest.FixtureRequest) -> str:
    try:
        return str(request.getfixturevalue("pg_url"))
    except pytest.FixtureLookupError:
        pytest.skip("no pg_url fixture: tests/support/pg.py (the PostgreSQL store) not merged")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, simulator: Any) -> Store:
    """A data directory with the 14 simulated partners, its store SQLite or PostgreSQL."""
    if request.param == "sqlite":
        return Store(request.getfixturevalue("prepared_dir")(NOW), ())
    from support.aio import run

    from gateway.demo import prepare

    url = _pg_url(request)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    run(prepare(data_dir, simulator, NOW, database=url))
    assert not (data_dir / "trustgw.db").exists()
    return Store(data_dir, ("--database", url), url)


def test_two_workers_answer_on_one_port_and_the_metrics_count_the_calls_of_both(
    codes: Any, store: Store
) -> None:
    make = codes(SHOW, NOW)

    async def scenario() -> None:
        async with supervised(store.data_dir, *store.flags) as server:
            pids = [await server.pid_of(0), await server.pid_of(1)]
            assert len(set(pids)) == 2
            channels: list[Any] = []
            try:
                calls = await call_on_new_connections(server, make, pids, channels)
                held = connections_by_worker(server.port, pids)
                assert all(held.values()), held  # both pids accepted connections and answered
                # One endpoint, every worker's calls: the sum is every call made.
                assert server.recognitions() == calls
                # Gauges are per worker: one sample per pid.
                versions = server.metrics()["trustgw_registry_version"]
                assert {int(s.labels["pid"]) for s in versions} == set(pids)
            finally:
                await _close(channels)
            server.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(server.process.wait(), GRACE + DEADLINE) == 0
        # Two workers recorded the trust list of one content at once: one version.
        recorded = store.trustlist_versions()
        assert len(recorded) == len({digest for _, digest in recorded}) == 1, recorded

    asyncio.run(scenario())


def test_a_worker_killed_with_sigkill_is_restarted_logged_and_serves_again(
    codes: Any, store: Store
) -> None:
    make = codes(CONVERT, NOW)  # conversions: every worker writes to the store

    async def scenario() -> None:
        async with supervised(store.data_dir, *store.flags) as server:
            first, killed = await server.pid_of(0), await server.pid_of(1)
            channels: list[Any] = []
            try:
                before = await call_on_new_connections(server, make, [first, killed], channels)
                os.kill(killed, signal.SIGKILL)
                line = await server.line(
                    lambda e: str(e.get("msg", "")).startswith(f"worker 1 (pid {killed}) exited"),
                    "the exit of the killed worker",
                )
                assert line["level"] == "warning"
                assert "killed by SIGKILL; restarting it in" in line["msg"]
                restarted = await server.pid_of(1, after=killed)
                assert restarted != killed
                assert any(
                    m == f"worker 1 (pid {restarted}) serving on port {server.port} again"
                    for m in server.messages()
                )
                await _close(channels)
                channels = []
                # The new worker accepts connections on the same port; worker 0 never stopped.
                after = await call_on_new_connections(server, make, [first, restarted], channels)
                # The dead worker's counts stay in the sums.
                assert server.recognitions() == before + after
                metrics = server.metrics()
                pids = {int(s.labels["pid"]) for s in metrics["trustgw_registry_version"]}
                assert pids == {first, restarted}  # its gauges went with it
                restarts = {
                    s.labels["worker"]: s.value for s in metrics["trustgw_worker_restarts_total"]
                }
                assert restarts == {"0": 0, "1": 1}
                workers = {s.labels["state"]: s.value for s in metrics["trustgw_workers"]}
                assert workers == {"configured": 2, "serving": 2}
            finally:
                await _close(channels)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("stop", "every_process"),
    [
        pytest.param(signal.SIGTERM, False, id="sigterm"),
        pytest.param(signal.SIGINT, False, id="sigint"),
        # systemd's KillMode=control-group: the workers get SIGTERM twice, theirs and forwarded
        pytest.param(signal.SIGTERM, True, id="sigterm-to-the-control-group"),
    ],
)
def test_a_signal_drains_every_worker_an_open_stream_is_answered_and_all_exit_0(
    codes: Any, store: Store, stop: signal.Signals, every_process: bool
) -> None:
    make = codes(CONVERT, NOW)

    async def scenario() -> None:
        async with supervised(store.data_dir, *store.flags) as server:
            pids = [await server.pid_of(0), await server.pid_of(1)]
            async with grpc.aio.insecure_channel(server.target, options=OWN_CONNECTION) as ch:
                stub = pb_grpc.RecognitionServiceStub(ch)
                health = health_pb2_grpc.HealthStub(ch)  # the same connection: the same worker
                watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
                await watch.read()
                stream = stub.RecogniseStream(timeout=60)
                await stream.write(pb.RecogniseRequest(request_id="before", code=make()))
                assert (await stream.read()).request_id == "before"
                server.process.send_signal(stop)
                if every_process:
                    for pid in pids:
                        os.kill(pid, stop)
                # The stream's worker is draining: its health turns NOT_SERVING ...
                while (status := await watch.read()) is not grpc.aio.EOF:
                    if status.status == NOT_SERVING:
                        break
                assert status is not grpc.aio.EOF and status.status == NOT_SERVING
                # ... and the stream accepted before the signal is still served to its end.
                sent = [f"during-{i}" for i in range(5)]
                for request_id in sent:
                    await stream.write(pb.RecogniseRequest(request_id=request_id, code=make()))
                await stream.done_writing()
                answers = []
                while (answer := await stream.read()) is not grpc.aio.EOF:
                    assert answer.reason == "RECOGNISED", answer.reason
                    answers.append(answer.request_id)
                assert answers == sent
                assert await stream.code() is grpc.StatusCode.OK
            code = await asyncio.wait_for(server.process.wait(), GRACE + DEADLINE)
            messages = server.messages()
            assert code == 0, messages
            for index, pid in enumerate(pids):
                assert f"worker {index} (pid {pid}) exited: exit status 0" in messages
            assert not any("restarting" in m for m in messages)

    asyncio.run(scenario())


def test_workers_refuse_a_busy_port_in_one_line(prepared_dir: Any) -> None:
    import socket

    data_dir = prepared_dir(NOW)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:

        async def scenario() -> tuple[int, bytes, bytes]:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.cli", "serve", "--insecure", "--workers", "2",
                "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{taken.getsockname()[1]}",
                cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )  # fmt: skip
            out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
            return await process.wait(), out, err

        code, out, err = asyncio.run(scenario())
    finally:
        taken.close()
    assert code == 4 and out == b""  # docs/operations.md "Exit codes"
    last = err.decode().strip().splitlines()[-1]
    assert last.startswith("trustgw: ADDRESS_IN_USE: cannot open the gRPC port 127.0.0.1:"), err


def test_a_worker_keeps_every_other_setting() -> None:
    """A guard on worker_config: only listen, metrics and the purge interval differ."""
    config = GatewayConfig(data_dir=Path("/gw"), trustlist_ttl=timedelta(hours=3))
    worker = worker_config(config, WorkerSlot(1, 2, "127.0.0.1:1"))
    assert worker.trustlist_ttl == config.trustlist_ttl
    assert worker.refresh_interval == config.refresh_interval and worker.grace == config.grace


def _documented_serve_lines() -> list[str]:
    """The ``serve --workers`` lines of README.md and docs/operations.md."""
    import re

    lines = []
    for page in (REPO / "README.md", REPO / "docs" / "operations.md"):
        for block in re.findall(r"^```sh[^\n]*\n(.*?)^```\n", page.read_text(), re.S | re.M):
            for line in block.splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line.startswith("trustgw serve ") and "--workers" in line:
                    lines.append(line)
    return lines


def test_the_documented_serve_lines_with_workers_run_as_written(tmp_path: Path) -> None:
    """docs/operations.md "Processes and workers" and README.md "Running a gateway": the serve
    lines, with the data directory a fresh ``init --dev`` one (its development CA gives the
    server its mutual-TLS files) and the ports free ones; SIGTERM stops them with 0."""
    import shlex

    from gateway.cli import main

    lines = _documented_serve_lines()
    assert len(lines) == 2, lines
    data_dir = tmp_path / "gw"
    assert main(["init", "--data-dir", str(data_dir), "--dev"]) == 0

    async def serve(line: str) -> None:
        line = line.replace("/var/lib/trustgw", str(data_dir))
        line = line.replace("0.0.0.0:50051", "127.0.0.1:0").replace(":9464", ":0")
        argv = shlex.split(line)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", *argv[1:],
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        try:
            assert process.stdout is not None
            first = (await asyncio.wait_for(process.stdout.readline(), DEADLINE)).decode()
            assert first.startswith("trustgw serving on 127.0.0.1:"), first
            assert first.rstrip().endswith("(mutual TLS, 2 workers)"), first
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), GRACE + DEADLINE) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    for line in lines:
        asyncio.run(serve(line))


def test_a_worker_that_cannot_start_stops_the_command_with_its_reason_in_one_line(
    tmp_path: Path,
) -> None:
    """Keys encrypted, no passphrase: each worker fails to open them; the supervisor stops the
    others and the command ends with the worker's reason, exit 3: configuration (no restart
    loop; docs/operations.md "Exit codes")."""
    data_dir = tmp_path / "gw"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TRUSTGW_PASSPHRASE": "workers"}
    env.pop("TRUSTGW_PASSPHRASE_FILE", None)

    async def scenario() -> tuple[int, str, str]:
        init = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "init", "--data-dir", str(data_dir),
            cwd=REPO, env=env, stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await asyncio.wait_for(init.wait(), DEADLINE) == 0
        without = {k: v for k, v in env.items() if k != "TRUSTGW_PASSPHRASE"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "serve", "--insecure", "--workers", "2",
            "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "--log-format", "json",
            cwd=REPO, env=without, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
        return await process.wait(), out.decode(), err.decode()

    code, out, err = asyncio.run(scenario())
    assert code == 3 and "serving on" not in out  # serve exits 3 for a configuration error
    assert err.strip().splitlines()[-1].startswith("trustgw: PASSPHRASE: "), err
    assert "restarting" not in err


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its new parent counts as exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status or "\nState:\tX" in status


def test_workers_stop_by_themselves_when_the_supervisor_dies(prepared_dir: Any) -> None:
    data_dir = prepared_dir(NOW)

    async def scenario() -> None:
        from support.wait import eventually

        async with supervised(data_dir) as server:
            pids = [await server.pid_of(0), await server.pid_of(1)]
            server.process.kill()  # SIGKILL: no drain is forwarded
            await server.process.wait()
            await eventually(lambda: all(_gone(pid) for pid in pids), timeout=DEADLINE)

    asyncio.run(scenario())


def test_sighup_to_the_supervisor_reloads_every_worker_and_stops_none(
    codes: Any, prepared_dir: Any
) -> None:
    """docs/operations.md "Processes and workers": SIGHUP is forwarded; each worker reloads
    (opsserve's "Reloading on SIGHUP") and keeps serving; the supervisor keeps running."""
    data_dir = prepared_dir(NOW)
    make = codes(SHOW, NOW)

    async def scenario() -> None:
        async with supervised(data_dir) as server:
            pids = [await server.pid_of(0), await server.pid_of(1)]
            server.process.send_signal(signal.SIGHUP)

            def reloads() -> int:
                return sum(m.startswith("SIGHUP: reloaded") for m in server.messages())

            async with server.changed:
                await asyncio.wait_for(server.changed.wait_for(lambda: reloads() == 2), DEADLINE)
            channels: list[Any] = []
            try:
                await call_on_new_connections(server, make, pids, channels)  # the same pids
            finally:
                await _close(channels)
            assert not any("exited" in m for m in server.messages())
            server.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(server.process.wait(), GRACE + DEADLINE) == 0

    asyncio.run(scenario())
