"""The load generator: closed-loop unary callers and pipelined bidi streams over grpc.aio.

Requests are pre-serialised bytes (see :mod:`bench.workload`); the client only sends them, parses
each reply and checks its reason and request id. Every failed RPC is counted, never retried.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from bench.workload import Request
from gateway.api.v1 import recognition_pb2 as pb

UNARY_METHOD = "/gateway.api.v1.RecognitionService/Recognise"
STREAM_METHOD = "/gateway.api.v1.RecognitionService/RecogniseStream"
CALL_TIMEOUT = 30.0  # seconds; a call slower than this is an error, not a latency
_TICK = os.sysconf("SC_CLK_TCK")


def _identity(data: bytes) -> bytes:
    return data


def channel_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", 64 * 1024),
        ("grpc.max_send_message_length", 64 * 1024),
        # one connection per channel object, not shared through the global subchannel pool
        ("grpc.use_local_subchannel_pool", 1),
    ]


class Cursor:
    """Hands out the requests of a sequence in order, cycling; the first pass is marked."""

    def __init__(self, requests: Sequence[Request], limit: int | None = None) -> None:
        if not requests:
            raise ValueError("no requests")
        self._requests = requests
        self._limit = limit
        self._n = 0

    def next(self) -> tuple[Request, bool] | None:
        """The next request and whether this is its first pass; None once ``limit`` are out."""
        n = self._n
        if self._limit is not None and n >= self._limit:
            return None
        self._n = n + 1
        size = len(self._requests)
        return self._requests[n % size], n < size

    @property
    def wrapped(self) -> bool:
        return self._n > len(self._requests)


@dataclass
class Stats:
    """What one timed run observed. Only calls completed inside the window count as throughput."""

    deadline: float
    latencies: list[float] = field(default_factory=list)
    # the same latencies by the request's region (the gateway's workload: 14 partner regions)
    by_region: dict[str, list[float]] = field(default_factory=dict)
    mismatches: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    new_conversions: int = 0
    examples: list[str] = field(default_factory=list)
    timeline: list[tuple[float, float]] | None = None  # (sent, replied) of every reply, if kept

    def reply(self, request: Request, first_pass: bool, data: bytes, t0: float, t1: float) -> None:
        response = pb.RecogniseResponse.FromString(data)
        self.reasons[response.reason] += 1
        if response.reason != request.expect or response.request_id != request.request_id:
            self.mismatches += 1
            if len(self.examples) < 5:
                self.examples.append(
                    f"region {request.region}: expected {request.expect} for "
                    f"{request.request_id}, got {response.reason} for {response.request_id}"
                    f" ({response.message})"
                )
        if self.timeline is not None:
            self.timeline.append((t0, t1))
        if t1 <= self.deadline:
            self.latencies.append(t1 - t0)
            self.by_region.setdefault(request.region, []).append(t1 - t0)
            if first_pass and request.new_conversion:
                self.new_conversions += 1

    def error(self, what: str) -> None:
        self.errors[what] += 1

    @property
    def completed(self) -> int:
        return len(self.latencies)


def _status(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code().name
    return type(exc).__name__


async def _unary_worker(
    call: grpc.aio.UnaryUnaryMultiCallable, cursor: Cursor, stats: Stats | None, deadline: float
) -> None:
    clock = time.perf_counter
    while True:
        item = cursor.next()
        t0 = clock()
        if item is None or t0 >= deadline:
            return
        request, first = item
        try:
            data = await call(request.data, timeout=CALL_TIMEOUT)
        except Exception as exc:  # a failed RPC is counted and reported, not hidden
            if stats is not None:
                stats.error(_status(exc))
            continue
        if stats is not None:
            stats.reply(request, first, data, t0, clock())


async def _stream_worker(
    channel: grpc.aio.Channel, cursor: Cursor, stats: Stats | None, deadline: float, window: int
) -> None:
    clock = time.perf_counter
    method = channel.stream_stream(
        STREAM_METHOD, request_serializer=_identity, response_deserializer=_identity
    )
    call = method(timeout=CALL_TIMEOUT + (deadline - clock()))
    slots = asyncio.Semaphore(window)
    inflight: collections.deque[tuple[float, Request, bool]] = collections.deque()

    async def writer() -> None:
        try:
            while True:
                await slots.acquire()
                item = cursor.next()
                t0 = clock()
                if item is None or t0 >= deadline:
                    break
                request, first = item
                inflight.append((t0, request, first))
                await call.write(request.data)
        finally:
            try:
                await call.done_writing()
            except Exception:  # noqa: S110 (the reader reports the stream's failure)
                pass

    async def reader() -> None:
        while True:
            data = await call.read()
            if data is grpc.aio.EOF:
                break
            t0, request, first = inflight.popleft()
            slots.release()
            if stats is not None:
                stats.reply(request, first, data, t0, clock())

    write_task = asyncio.create_task(writer())
    try:
        await reader()
        if inflight:  # the server closed the stream with requests unanswered
            raise RuntimeError("stream ended early")
        code = await call.code()
        if code is not grpc.StatusCode.OK:
            raise RuntimeError(f"stream ended with {code.name}")
    except Exception as exc:
        if stats is not None:
            stats.error(f"stream {_status(exc)}")
            for _ in inflight:
                stats.error("unanswered in stream")
        call.cancel()
    finally:
        write_task.cancel()
        await asyncio.gather(write_task, return_exceptions=True)


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) used so far by process ``pid``."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass
class RunResult:
    form: str
    target: str
    duration: float
    completed: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    mismatches: int
    new_conversions: int
    server_cpu: float  # share of one core the server used during the window
    client_cpu: float  # share of one core the load generator used during the window
    reasons: dict[str, int]
    examples: list[str]
    fresh_wrapped: bool = False
    region_p50_ms: dict[str, float] = field(default_factory=dict)
    region_p99_ms: dict[str, float] = field(default_factory=dict)

    @property
    def failures(self) -> int:
        return sum(self.errors.values()) + self.mismatches


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class Target:
    """One server under test: its channels and its process id (for CPU accounting)."""

    def __init__(
        self,
        name: str,
        address: str,
        pid: int,
        channels: int,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.name = name
        self.pid = pid
        if credentials is None:
            self.channels = [
                grpc.aio.insecure_channel(address, options=channel_options())
                for _ in range(channels)
            ]
        else:
            self.channels = [
                grpc.aio.secure_channel(address, credentials, options=channel_options())
                for _ in range(channels)
            ]
        self._unary = [
            ch.unary_unary(
                UNARY_METHOD, request_serializer=_identity, response_deserializer=_identity
            )
            for ch in self.channels
        ]

    async def ready(self, timeout: float = 20.0) -> None:
        for ch in self.channels:
            await asyncio.wait_for(ch.channel_ready(), timeout)

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()

    async def run(
        self,
        form: str,
        requests: Sequence[Request],
        duration: float,
        *,
        concurrency: int,
        streams: int,
        window: int,
        record: bool = True,
        limit: int | None = None,
        timeline: list[tuple[float, float]] | None = None,
    ) -> RunResult:
        """Drive ``form`` ("unary" or "stream") for ``duration`` seconds (or until ``limit``
        requests are out) and measure it; ``timeline`` gets (sent, replied) of every reply."""
        cursor = Cursor(requests, limit)
        start = time.perf_counter()
        deadline = start + duration
        stats = Stats(deadline, timeline=timeline) if record else None
        cpu0, client0 = _proc_cpu(self.pid), time.process_time()
        if form == "unary":
            workers = [
                _unary_worker(self._unary[i % len(self._unary)], cursor, stats, deadline)
                for i in range(concurrency)
            ]
        elif form == "stream":
            workers = [
                _stream_worker(
                    self.channels[i % len(self.channels)], cursor, stats, deadline, window
                )
                for i in range(streams)
            ]
        else:
            raise ValueError(f"unknown form {form!r}")
        await asyncio.gather(*workers)
        elapsed = max(time.perf_counter() - start, 1e-9)
        # The window is [start, deadline]; the tail (in-flight calls finishing) is not counted,
        # so CPU is scaled to the whole elapsed time: a slight underestimate, never an over one.
        server_cpu = (_proc_cpu(self.pid) - cpu0) / elapsed
        client_cpu = (time.process_time() - client0) / elapsed
        stats = stats or Stats(deadline)
        latencies = sorted(stats.latencies)
        return RunResult(
            form=form,
            target=self.name,
            duration=duration,
            completed=stats.completed,
            rps=stats.completed / min(duration, elapsed),
            p50_ms=_percentile(latencies, 0.50) * 1e3,
            p99_ms=_percentile(latencies, 0.99) * 1e3,
            errors=dict(stats.errors),
            mismatches=stats.mismatches,
            new_conversions=stats.new_conversions,
            server_cpu=server_cpu,
            client_cpu=client_cpu,
            reasons=dict(stats.reasons),
            examples=stats.examples,
            fresh_wrapped=cursor.wrapped,
            region_p50_ms={
                r: _percentile(sorted(v), 0.50) * 1e3 for r, v in stats.by_region.items()
            },
            region_p99_ms={
                r: _percentile(sorted(v), 0.99) * 1e3 for r, v in stats.by_region.items()
            },
        )
