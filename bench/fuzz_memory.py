"""gRPC fuzzing of a real server, and its memory while it lasts (issue 8, "How it will be checked").

    python bench/fuzz_memory.py                   # 20,000 calls, about two minutes
    python bench/fuzz_memory.py --calls 100000 --seed 7

Starts ``trustgw serve`` (mutual TLS, a development data directory with the 14 simulated
partners) and sends every method of the port — unary and streaming, of every service — random
input of three kinds, each from the certificate of a caller allowed to make the call:

* **codes**: valid codes of every region, mutated (a character replaced, inserted or deleted,
  cut short, doubled), and random text behind a real prefix, to ``Recognise`` and in streams;
* **fields**: well-formed messages of the method's request type with random field values
  (long and non-ASCII ids and hints, any int64, random submission bytes, random health and
  reflection names);
* **wire**: random bytes that are mostly not a message of the request type at all.

Every status is counted; ``INTERNAL`` and ``UNKNOWN`` are findings (so is a refusal without
``google.rpc.ErrorInfo``, where api.md promises one). The server's resident set (``VmRSS``) is
read after a warm-up, then every ``--every`` calls; the last line is one JSON object with the
figures, the growth from the warm-up to the end and the growth over the second half of the run
(flat memory: the second-half slope is near zero). tests/test_grpc_fuzz.py runs the same
inputs, drawn by hypothesis, and asserts only the statuses.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout that is not installed
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from google.protobuf.message import Message  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_health.v1 import health_pb2  # noqa: E402
from grpc_reflection.v1alpha import reflection_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

from adapters.base import Colour  # noqa: E402
from adapters.simulator import PartnerSimulator, fake_holder  # noqa: E402
from gateway.api.v1 import declaration_pb2 as dpb  # noqa: E402
from gateway.api.v1 import recognition_pb2 as pb  # noqa: E402
from gateway.api.v1 import registry_pb2 as rpb  # noqa: E402
from gateway.api.v1 import tracing_pb2 as tpb  # noqa: E402

PARTNER_REGION = "110000"
WATCH_SECONDS = 1.0  # a watch that has nothing to send yet is ended by its deadline


@dataclass(frozen=True)
class Method:
    path: str
    kind: str  # unary, server-stream, bidi
    role: str  # the certificate that may call it
    request: type[Message]


METHODS = [
    Method(
        "/gateway.api.v1.RecognitionService/Recognise", "unary", "verifier", pb.RecogniseRequest
    ),
    Method(
        "/gateway.api.v1.RecognitionService/RecogniseStream",
        "bidi",
        "verifier",
        pb.RecogniseRequest,
    ),
    Method(
        "/gateway.api.v1.RecognitionService/GetGatewayKeys",
        "unary",
        "verifier",
        pb.GetGatewayKeysRequest,
    ),
    Method(
        "/gateway.api.v1.PartnerService/PublishKeySet", "unary", "partner", rpb.SubmissionRequest
    ),
    Method("/gateway.api.v1.PartnerService/RevokeKey", "unary", "partner", rpb.SubmissionRequest),
    Method(
        "/gateway.api.v1.PartnerService/PublishRevocations",
        "unary",
        "partner",
        rpb.SubmissionRequest,
    ),
    Method(
        "/gateway.api.v1.TrustListService/GetTrustList",
        "unary",
        "operator",
        rpb.GetTrustListRequest,
    ),
    Method(
        "/gateway.api.v1.TrustListService/WatchTrustList",
        "server-stream",
        "operator",
        rpb.WatchTrustListRequest,
    ),
    Method("/gateway.api.v1.DeclarationService/Declare", "unary", "declarant", dpb.DeclareRequest),
    Method(
        "/gateway.api.v1.DeclarationService/GetDeclaration",
        "unary",
        "declarant",
        dpb.GetDeclarationRequest,
    ),
    Method(
        "/gateway.api.v1.TracingService/VenuesVisited", "unary", "tracer", tpb.VenuesVisitedRequest
    ),
    Method("/gateway.api.v1.TracingService/Contacts", "unary", "tracer", tpb.ContactsRequest),
    Method("/grpc.health.v1.Health/Check", "unary", "verifier", health_pb2.HealthCheckRequest),
    Method(
        "/grpc.health.v1.Health/Watch", "server-stream", "verifier", health_pb2.HealthCheckRequest
    ),
    Method(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "bidi",
        "verifier",
        reflection_pb2.ServerReflectionRequest,
    ),
]
BY_PATH = {m.path: m for m in METHODS}
FORBIDDEN = {"INTERNAL", "UNKNOWN"}
# Statuses gRPC or the health service give without an ErrorInfo, as api.md says.
WITHOUT_INFO = {"OK", "NOT_FOUND", "DEADLINE_EXCEEDED", "CANCELLED"}


@dataclass(frozen=True)
class Outcome:
    """One call: its status, the ErrorInfo reason (if any) and the responses (raw)."""

    status: str
    reason: str | None
    responses: list[bytes]

    @property
    def finding(self) -> str | None:
        if self.status in FORBIDDEN:
            return f"{self.status}"
        if self.status not in WITHOUT_INFO and self.reason is None:
            return f"{self.status} without ErrorInfo"
        return None


def _reason(error: grpc.RpcError) -> str | None:
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:
        return None
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return None


def call(channel: grpc.Channel, method: Method, messages: Sequence[bytes]) -> Outcome:
    """Send ``messages`` (raw bytes) to ``method``: one for unary and server-streaming calls,
    all of them in a stream; read every response (a watch: the first, or until its deadline)."""
    try:
        if method.kind == "unary":
            return Outcome("OK", None, [channel.unary_unary(method.path)(messages[0], timeout=30)])
        if method.kind == "server-stream":
            responses = []
            stream = channel.unary_stream(method.path)(messages[0], timeout=WATCH_SECONDS)
            for response in stream:
                responses.append(response)
                stream.cancel()
                break
            return Outcome("OK", None, responses)
        stream = channel.stream_stream(method.path)(iter(messages), timeout=60)
        return Outcome("OK", None, list(stream))
    except grpc.RpcError as error:
        code = error.code()  # type: ignore[attr-defined]
        if code is grpc.StatusCode.CANCELLED and method.kind == "server-stream":
            return Outcome("OK", None, [])
        return Outcome(code.name, _reason(error), [])


# --- the inputs -----------------------------------------------------------------------------------


def valid_codes(simulator: PartnerSimulator, now: datetime, per_region: int = 4) -> list[str]:
    """Green, yellow and red codes of every simulated region, fresh at ``now``."""
    from datetime import timedelta

    rng = random.Random(1)
    codes = []
    for issuer in simulator.issuers():
        for n in range(per_region):
            holder_id, name = fake_holder(rng)
            colour = (Colour.GREEN, Colour.YELLOW, Colour.RED)[n % 3]
            codes.append(
                issuer.issue(
                    holder_id=holder_id,
                    holder_name=name,
                    colour=colour,
                    issued_at=now - timedelta(hours=1),
                    expires_at=now + timedelta(hours=20),
                )
            )
    return codes


def mutate(rng: random.Random, code: str) -> str:
    """One random edit of a code: replace, insert, delete, cut, double or keep the prefix."""
    if not code:
        return code
    i = rng.randrange(len(code))
    alphabet = "ABCXYZabcxyz0123456789-_.:$%*+/ =绿\x00\U0001f600"
    edit = rng.randrange(6)
    if edit == 0:
        return code[:i] + rng.choice(alphabet) + code[i + 1 :]
    if edit == 1:
        return code[:i] + rng.choice(alphabet) + code[i:]
    if edit == 2:
        return code[:i] + code[i + 1 :]
    if edit == 3:
        return code[:i]
    if edit == 4:
        return code + code[i:]
    return code[: max(1, i // 8)] + "".join(rng.choice(alphabet) for _ in range(rng.randrange(80)))


def _text(rng: random.Random, limit: int) -> str:
    pools = ("abcXYZ019-_.:", "绿黄红王伟\u00e9\u0000\ud7ff\U0010ffff", "\t\n \x7f")
    pool = "".join(rng.sample(pools, rng.randrange(1, 4)))
    return "".join(rng.choice(pool) for _ in range(rng.randrange(limit)))


def random_fields(rng: random.Random, method: Method, codes: Sequence[str]) -> bytes:
    """A well-formed request of ``method``'s type with random field values."""
    request = method.request
    if request is pb.RecogniseRequest:
        code = mutate(rng, rng.choice(codes)) if rng.random() < 0.7 else _text(rng, 300)
        hint = rng.choice(["", PARTNER_REGION, "370000", "abcdef", _text(rng, 10), "1" * 7])
        message: Message = pb.RecogniseRequest(
            request_id=_text(rng, 140) if rng.random() < 0.3 else f"r{rng.randrange(10**6)}",
            code=code,
            region_hint=hint,
        )
    elif request is rpb.SubmissionRequest:
        message = rpb.SubmissionRequest(submission=rng.randbytes(rng.randrange(400)))
    elif request in (rpb.GetTrustListRequest, rpb.WatchTrustListRequest):
        value = rng.choice([0, 1, -1, 2**63 - 1, -(2**63), rng.randrange(-(2**40), 2**40)])
        message = request(since_version=value)
    elif request is health_pb2.HealthCheckRequest:
        message = health_pb2.HealthCheckRequest(
            service=rng.choice(["", "gateway.api.v1.RecognitionService", _text(rng, 60)])
        )
    elif request is reflection_pb2.ServerReflectionRequest:
        which = rng.randrange(4)
        name = rng.choice(["gateway.api.v1.RecognitionService", _text(rng, 60)])
        message = reflection_pb2.ServerReflectionRequest(
            host=_text(rng, 20),
            **[
                {"list_services": name},
                {"file_by_filename": name},
                {"file_containing_symbol": name},
                {"all_extension_numbers_of_type": name},
            ][which],
        )
    else:
        message = request()
    return message.SerializeToString()


def random_wire(rng: random.Random) -> bytes:
    """Random bytes, sometimes behind a plausible field tag."""
    body = rng.randbytes(rng.randrange(1, 200))
    return rng.choice([b"", b"\x0a", b"\x12", b"\x08", b"\x1a\x05"]) + body


def random_messages(rng: random.Random, method: Method, codes: Sequence[str]) -> list[bytes]:
    count = rng.randrange(1, 6) if method.kind == "bidi" else 1
    out = []
    for _ in range(count):
        out.append(random_fields(rng, method, codes) if rng.random() < 0.6 else random_wire(rng))
    return out


# --- the server -----------------------------------------------------------------------------------


@dataclass
class World:
    pid: int
    channels: dict[str, grpc.Channel]
    codes: list[str]


@contextmanager
def serving(tmp: Path, now: datetime) -> Iterator[World]:
    """``trustgw serve`` over mutual TLS with one channel per role (raw bytes in and out)."""
    import asyncio

    from bench.run import children, spawn
    from gateway.demo import prepare
    from gateway.pki import DevCA

    simulator = PartnerSimulator.generate()
    data_dir = tmp / "data"
    data_dir.mkdir()
    asyncio.run(prepare(data_dir, simulator, now))
    ca = DevCA.create(tmp / "pki", now)
    server_cert, server_key = ca.issue("server", server=True, now=now)
    roles = {
        "verifier": "trustgw://verifier/fuzz",
        "partner": f"trustgw://partner/{PARTNER_REGION}",
        "operator": "trustgw://operator/fuzz",
        "declarant": "trustgw://declarant-channel/fuzz",
        "tracer": "trustgw://tracer/fuzz",
    }
    argv = [
        sys.executable,
        "-m",
        "gateway.cli",
        "serve",
        "--data-dir",
        str(data_dir),
        "--listen",
        "127.0.0.1:0",
        "--log-level",
        "error",
        "--tls-cert",
        str(server_cert),
        "--tls-key",
        str(server_key),
        "--tls-ca",
        str(ca.cert_path),
    ]
    with children() as procs:
        child = spawn("gateway", argv, None, tmp)
        procs.append(child)
        port = child.address.rsplit(":", 1)[1]
        channels = {}
        options = [("grpc.max_send_message_length", 8 * 1024 * 1024)]
        for role, uri in roles.items():
            cert, key = ca.issue(role, uri=uri, now=now)
            credentials = grpc.ssl_channel_credentials(
                ca.cert_path.read_bytes(), key.read_bytes(), cert.read_bytes()
            )
            channels[role] = grpc.secure_channel(f"localhost:{port}", credentials, options)
        try:
            yield World(child.proc.pid, channels, valid_codes(simulator, now))
        finally:
            for channel in channels.values():
                channel.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for {pid}")


def main(argv: Sequence[str] | None = None) -> int:
    from keys.timeutil import utcnow

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=20_000, help="calls in all (%(default)s)")
    p.add_argument("--warmup", type=int, default=2_000, help="calls before the first reading")
    p.add_argument("--every", type=int, default=2_000, help="calls between readings")
    p.add_argument("--seed", type=int, default=8)
    a = p.parse_args(argv)
    rng = random.Random(a.seed)
    statuses: collections.Counter[str] = collections.Counter()
    findings: collections.Counter[str] = collections.Counter()
    readings: list[tuple[int, float]] = []
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="trustgw-fuzz-") as tmp,
        serving(Path(tmp), utcnow()) as world,
    ):
        first_rss = rss_mb(world.pid)
        for n in range(1, a.calls + 1):
            method = rng.choice(METHODS)
            messages = random_messages(rng, method, world.codes)
            outcome = call(world.channels[method.role], method, messages)
            statuses[f"{method.path.rsplit('/', 1)[1]} {outcome.status}"] += 1
            if outcome.finding:
                findings[f"{method.path} {outcome.finding}"] += 1
                print(f"finding: {method.path} {outcome.finding} {[m.hex() for m in messages]}")
            if n >= a.warmup and (n - a.warmup) % a.every == 0:
                readings.append((n, rss_mb(world.pid)))
                print(f"{n:>7} calls  RSS {readings[-1][1]:7.1f} MB", flush=True)
    half = [r for r in readings if r[0] >= a.warmup + (a.calls - a.warmup) / 2]
    result = {
        "calls": a.calls,
        "seed": a.seed,
        "seconds": round(time.monotonic() - started, 1),
        "rss_start_mb": round(first_rss, 1),
        "rss_after_warmup_mb": round(readings[0][1], 1),
        "rss_end_mb": round(readings[-1][1], 1),
        "growth_after_warmup_mb": round(readings[-1][1] - readings[0][1], 1),
        "growth_second_half_mb": round(half[-1][1] - half[0][1], 1) if len(half) > 1 else 0.0,
        "readings": [[n, round(mb, 1)] for n, mb in readings],
        "findings": dict(findings),
        "statuses": dict(sorted(statuses.items())),
    }
    print(json.dumps(result, sort_keys=True), flush=True)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
