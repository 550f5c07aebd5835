"""Requests as bytes on the wire: bytes that are not protobuf, messages over a method's limit, and
streams refused while the caller is still writing. Against a real server on a free port, over
mutual TLS where roles matter. docs/api.md, "The order of checks on every call", "RPC errors",
"Limits" and "Refused streams"."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status
from support.aio import run
from support.clock import REAL_NOW
from support.wait import eventually

from adapters.regions import REGION_SPECS
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import registry_pb2 as rpb
from gateway.grpc.declaration import DeclarationService
from gateway.grpc.methods import (
    MAX_RECEIVE_BYTES,
    MAX_RECOGNISE_REQUEST_BYTES,
    MAX_SMALL_REQUEST_BYTES,
    MAX_SUBMISSION_REQUEST_BYTES,
    decode,
)
from gateway.grpc.partner import PartnerService
from gateway.grpc.recognition import RecognitionService
from gateway.grpc.server import build_server
from gateway.grpc.trustlist import TrustListService
from gateway.limits import MAX_DECLARE_REQUEST_BYTES, MAX_STATUS_REQUEST_BYTES, REQUEST_LIMITS
from gateway.pki import DevCA, TlsFiles
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import Gateway
from keys.errors import RequestMalformedError, RequestTooLargeError
from keys.signed import MAX_ENVELOPE_BYTES

pytestmark = pytest.mark.integration  # real servers (tests/support/tiers.py)

NOW = REAL_NOW  # a serving gateway reads the real clock
REGION = REGION_SPECS[0].code
T = TypeVar("T")

RECOGNISE = "/gateway.api.v1.RecognitionService/Recognise"
STREAM = "/gateway.api.v1.RecognitionService/RecogniseStream"
KEYS = "/gateway.api.v1.RecognitionService/GetGatewayKeys"
PUBLISH = "/gateway.api.v1.PartnerService/PublishKeySet"
REVOKE = "/gateway.api.v1.PartnerService/RevokeKey"
REVOCATIONS = "/gateway.api.v1.PartnerService/PublishRevocations"
GET_LIST = "/gateway.api.v1.TrustListService/GetTrustList"
WATCH = "/gateway.api.v1.TrustListService/WatchTrustList"
HEALTH = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"

NOT_UTF8 = bytes.fromhex("1202fffe")  # field 2 (Recognise's code): a string that is not UTF-8
TRUNCATED = bytes.fromhex("0a0561")  # a length-delimited field of 5 bytes holding 1
BAD_TAG = bytes.fromhex("ffffffffffffffffffff01")  # a field tag that is not a varint
# Bytes no message of any of the methods below decodes.
JUNK = (TRUNCATED, BAD_TAG, bytes.fromhex("0c"))

# Every unary-response method of the port, the certificate that may call it, and bytes that
# its request type cannot decode.
UNARY = [
    (RECOGNISE, "verifier", (NOT_UTF8, *JUNK)),
    (KEYS, "verifier", JUNK),
    (PUBLISH, "partner", JUNK),
    (REVOKE, "partner", JUNK),
    (REVOCATIONS, "partner", JUNK),
    (GET_LIST, "operator", JUNK),
    (WATCH, "verifier", JUNK),
    (HEALTH, "no-role", (bytes.fromhex("0a02fffe"), *JUNK)),
    (HEALTH_WATCH, "no-role", JUNK),
]


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TlsFiles]:
    ca = DevCA.create(tmp_path / "pki", NOW)
    files = {"server": TlsFiles(*ca.issue("server", server=True, now=NOW), ca.cert_path)}
    for name, uri in [
        ("verifier", "trustgw://verifier/checkpoint-7"),
        ("operator", "trustgw://operator/ops"),
        ("partner", f"trustgw://partner/{REGION}"),
        ("no-role", None),
    ]:
        files[name] = TlsFiles(*ca.issue(name, uri=uri, now=NOW), ca.cert_path)
    return files


Body = Callable[[Any, dict[str, grpc.aio.Channel], Any], Awaitable[T]]


@pytest.fixture
def world(prepared_dir, pki):
    """``world(body)``: run ``body(gateway, channels, running)`` against a real mTLS gateway,
    with one channel per certificate (raw bytes in and out: no serialiser on either side)."""
    data_dir = prepared_dir(NOW)

    def go(body: Body[T]) -> T:
        async def scenario() -> T:
            gateway = await Gateway.open(
                GatewayConfig(data_dir=data_dir, refresh_interval=0.1, tls=pki["server"])
            )
            running = await build_server(gateway, "127.0.0.1:0", pki["server"])
            port = running.port
            try:
                channels = {}
                for name in ("verifier", "operator", "partner", "no-role"):
                    cert, key, ca = pki[name].read()
                    creds = grpc.ssl_channel_credentials(ca, key, cert)
                    options = [("grpc.max_send_message_length", 8 * 1024 * 1024)]
                    channels[name] = grpc.aio.secure_channel(f"localhost:{port}", creds, options)
                try:
                    return await body(gateway, channels, running)
                finally:
                    for channel in channels.values():
                        await channel.close()
            finally:
                await running.stop(0.5)
                await gateway.close()

        return run(scenario())

    return go


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None, f"{error.code()} without google.rpc.Status: {error.details()}"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


async def call_raw(
    channel: grpc.aio.Channel, method: str, data: bytes, **kwargs: Any
) -> list[bytes] | grpc.aio.AioRpcError:
    """Call ``method`` with ``data`` as it is: its responses (raw), or the error."""
    try:
        if method in (WATCH, HEALTH_WATCH):
            call = channel.unary_stream(method)(data, timeout=10, **kwargs)
            return [await call.read()]  # the first response is enough (watches go on)
        return [await channel.unary_unary(method)(data, timeout=10, **kwargs)]
    except grpc.aio.AioRpcError as exc:
        return exc


# --- bytes that are not protobuf: docs/api.md "RPC errors" -----------------------------------


def test_bytes_that_are_not_protobuf_are_invalid_argument_on_every_method(world) -> None:
    """docs/api.md, RPC errors and The order of checks on every call: REQUEST_MALFORMED, with
    ErrorInfo and the request id, on every method (health's included)."""

    async def body(gateway, channels, running) -> list[tuple[str, bytes, Any]]:
        results = []
        for method, who, bad in UNARY:
            for data in bad:
                meta = (("x-request-id", "bad-bytes-1"),)
                results.append(
                    (method, data, await call_raw(channels[who], method, data, metadata=meta))
                )
        return results

    for method, data, result in world(body):
        assert isinstance(result, grpc.aio.AioRpcError), (method, data.hex(), result)
        assert result.code() is grpc.StatusCode.INVALID_ARGUMENT, (method, data.hex())
        info = error_info(result)
        assert (info.reason, info.domain) == ("REQUEST_MALFORMED", "trustgw.gateway")
        assert info.metadata["request_id"] == "bad-bytes-1"
        assert dict(result.trailing_metadata())["x-request-id"] == "bad-bytes-1"
        assert "DecodeError" not in result.details() and "Unexpected" not in result.details()


def test_a_caller_without_the_role_is_refused_before_its_bytes_are_decoded(world) -> None:
    """docs/api.md, The order of checks on every call: the role comes before the size and the
    decoding; the ErrorInfo names the request id."""

    async def body(gateway, channels, running) -> list[tuple[str, str, Any]]:
        cases = [
            (RECOGNISE, "partner"),
            (RECOGNISE, "operator"),
            (RECOGNISE, "no-role"),
            (PUBLISH, "verifier"),
            (REVOCATIONS, "no-role"),
            (GET_LIST, "no-role"),
            (WATCH, "no-role"),
            (KEYS, "no-role"),
        ]
        results = [(m, who, await call_raw(channels[who], m, NOT_UTF8)) for m, who in cases]
        # ... and before its size: a message over the limit is still a refusal of the caller.
        over = b"\xff" * (MAX_RECOGNISE_REQUEST_BYTES + 1)
        results.append((RECOGNISE, "partner", await call_raw(channels["partner"], RECOGNISE, over)))
        return results

    for method, who, result in world(body):
        assert isinstance(result, grpc.aio.AioRpcError), (method, who)
        expected = (
            grpc.StatusCode.UNAUTHENTICATED
            if who == "no-role"
            else (grpc.StatusCode.PERMISSION_DENIED)
        )
        assert result.code() is expected, (method, who, result.code(), result.details())
        info = error_info(result)
        assert info.reason == expected.name
        assert info.metadata["request_id"] == dict(result.trailing_metadata())["x-request-id"]


def test_a_malformed_request_is_one_warning_without_traceback_and_a_count(world, caplog) -> None:
    """docs/api.md, The order of checks on every call: one warning in the log (no traceback),
    trustgw_bad_requests_total, and the RPC in grpc_server_handled_total."""
    caplog.set_level(logging.INFO)

    async def body(gateway, channels, running) -> tuple[Any, float | None, float | None]:
        result = await call_raw(channels["verifier"], RECOGNISE, NOT_UTF8)
        registry = gateway.metrics.registry

        def errors() -> float | None:
            return registry.get_sample_value(
                "grpc_server_handled_total",
                {
                    "grpc_type": "unary",
                    "grpc_service": "gateway.api.v1.RecognitionService",
                    "grpc_method": "Recognise",
                    "grpc_code": "INVALID_ARGUMENT",
                },
            )

        # The status reaches the caller before the handler's frame unwinds: the RPC error is
        # counted when the interceptor's finally runs, which may be after the client saw it.
        await eventually(lambda: errors() is not None, what="the RPC error counted")
        bad = registry.get_sample_value(
            "trustgw_bad_requests_total", {"method": "Recognise", "reason": "REQUEST_MALFORMED"}
        )
        return result, bad, errors()

    result, bad, errors = world(body)
    assert isinstance(result, grpc.aio.AioRpcError)
    assert (bad, errors) == (1.0, 1.0)
    refused = [r for r in caplog.records if "REQUEST_MALFORMED" in r.getMessage()]
    assert [(r.levelno, r.exc_info) for r in refused] == [(logging.WARNING, None)]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_bad_messages_in_a_stream_are_answered_in_order_and_the_stream_goes_on(
    world, codes
) -> None:
    """docs/api.md, RecogniseStream: a message that is not protobuf, or too large, is answered
    in its place (reason REQUEST_MALFORMED, REQUEST_TOO_LARGE) and counted."""
    code = codes(REGION, NOW)()
    good = [pb.RecogniseRequest(request_id=f"r{n}", code=code).SerializeToString() for n in (0, 1)]
    too_large = pb.RecogniseRequest(code="A" * MAX_RECOGNISE_REQUEST_BYTES).SerializeToString()
    sent = [good[0], NOT_UTF8, TRUNCATED, too_large, good[1]]

    async def body(gateway, channels, running) -> tuple[list[pb.RecogniseResponse], dict[str, Any]]:
        call = channels["verifier"].stream_stream(STREAM)(iter(sent), timeout=10)
        responses = [pb.RecogniseResponse.FromString(raw) async for raw in call]
        registry = gateway.metrics.registry
        counts = {
            reason: registry.get_sample_value(
                "trustgw_bad_requests_total", {"method": "RecogniseStream", "reason": reason}
            )
            for reason in ("REQUEST_MALFORMED", "REQUEST_TOO_LARGE")
        }
        return responses, {"code": await call.code(), **counts}

    responses, seen = world(body)
    assert [(r.request_id, r.reason) for r in responses] == [
        ("r0", "RECOGNISED"),
        ("", "REQUEST_MALFORMED"),
        ("", "REQUEST_MALFORMED"),
        ("", "REQUEST_TOO_LARGE"),
        ("r1", "RECOGNISED"),
    ]
    assert all(r.message for r in responses)
    assert seen == {
        "code": grpc.StatusCode.OK,
        "REQUEST_MALFORMED": 2.0,
        "REQUEST_TOO_LARGE": 1.0,
    }


def test_a_malformed_reflection_request_is_invalid_argument(world) -> None:
    """docs/api.md, RPC errors: the library's services too (reflection, health above)."""
    listing = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()

    async def body(gateway, channels, running) -> tuple[list[bytes], Any]:
        call = channels["no-role"].stream_stream(REFLECTION)(iter([listing]), timeout=10)
        good = [raw async for raw in call]
        bad = channels["no-role"].stream_stream(REFLECTION)(iter([BAD_TAG]), timeout=10)
        try:
            return good, [raw async for raw in bad]
        except grpc.aio.AioRpcError as exc:
            return good, exc

    good, bad = world(body)
    names = reflection_pb2.ServerReflectionResponse.FromString(good[0]).list_services_response
    assert "gateway.api.v1.RecognitionService" in {s.name for s in names.service}
    assert isinstance(bad, grpc.aio.AioRpcError)
    assert bad.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(bad).reason == "REQUEST_MALFORMED"


def test_random_bytes_never_get_unknown_or_internal(world) -> None:
    """docs/api.md, RPC errors: whatever the bytes, a stable status (seeded, 150 per method)."""
    rng = random.Random(8_12)
    allowed = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}
    samples = [rng.randbytes(rng.randrange(1, 64)) for _ in range(150)]

    async def body(gateway, channels, running) -> Counter[tuple[str, str]]:
        seen: Counter[tuple[str, str]] = Counter()
        for method, who in [
            (RECOGNISE, "verifier"),
            (PUBLISH, "partner"),
            (GET_LIST, "partner"),
            (HEALTH, "no-role"),
        ]:
            for data in samples:
                result = await call_raw(channels[who], method, data)
                code = (
                    result.code()
                    if isinstance(result, grpc.aio.AioRpcError)
                    else (grpc.StatusCode.OK)
                )
                seen[(method, code.name)] += 1
                assert code in allowed or (
                    method == PUBLISH
                    and code is not (grpc.StatusCode.UNKNOWN)
                    and code is not grpc.StatusCode.INTERNAL
                ), (method, data.hex(), code)
        return seen

    seen = world(body)
    assert not [k for k in seen if k[1] in ("UNKNOWN", "INTERNAL")]
    assert seen[(RECOGNISE, "INVALID_ARGUMENT")] > 0


# --- per-method limits: docs/api.md "Limits" -------------------------------------------------


def test_each_method_reads_requests_up_to_its_own_limit() -> None:
    """docs/api.md, Limits: recognition 32 KiB, partner submissions 2 MiB + framing, the rest
    4 KiB; the server-wide gRPC limit is the largest of them."""
    limits = {
        name: rule.max_request_bytes
        for servicer in (RecognitionService, PartnerService, TrustListService, DeclarationService)
        for name, rule in servicer.methods.items()
    }
    # The same table as the SDK's (it refuses a larger request before sending it).
    assert {
        f"/{servicer.service.full_name}/{name}": rule.max_request_bytes
        for servicer in (RecognitionService, PartnerService, TrustListService, DeclarationService)
        for name, rule in servicer.methods.items()
    } == dict(REQUEST_LIMITS)
    assert limits == {
        "Recognise": MAX_RECOGNISE_REQUEST_BYTES,
        "RecogniseStream": MAX_RECOGNISE_REQUEST_BYTES,
        "GetGatewayKeys": MAX_SMALL_REQUEST_BYTES,
        "PublishKeySet": MAX_SUBMISSION_REQUEST_BYTES,
        "RevokeKey": MAX_SUBMISSION_REQUEST_BYTES,
        "PublishRevocations": MAX_SUBMISSION_REQUEST_BYTES,
        "GetCodeStatus": MAX_STATUS_REQUEST_BYTES,
        "GetTrustList": MAX_SMALL_REQUEST_BYTES,
        "WatchTrustList": MAX_SMALL_REQUEST_BYTES,
        "Declare": MAX_DECLARE_REQUEST_BYTES,
        "GetDeclaration": MAX_SMALL_REQUEST_BYTES,
    }
    assert (MAX_RECOGNISE_REQUEST_BYTES, MAX_SMALL_REQUEST_BYTES) == (32 * 1024, 4 * 1024)
    # The largest status question fits: a 4096-character (ASCII) home code and a 64-char nonce.
    question = rpb.GetCodeStatusRequest(code="S" * 4096, nonce="n" * 64)
    assert question.ByteSize() <= MAX_STATUS_REQUEST_BYTES == 8 * 1024
    assert MAX_RECEIVE_BYTES == max(limits.values()) == MAX_SUBMISSION_REQUEST_BYTES
    # The largest legitimate messages fit: a 4096-character code of 4-byte characters with a
    # 128-character request id and a hint; a submission of the largest envelope.
    largest = pb.RecogniseRequest(
        request_id="\U0001d538" * 128, code="\U0001d538" * 4096, region_hint="110000"
    )
    assert largest.ByteSize() < MAX_RECOGNISE_REQUEST_BYTES
    submission = rpb.SubmissionRequest(submission=b"x" * MAX_ENVELOPE_BYTES)
    assert submission.ByteSize() <= MAX_SUBMISSION_REQUEST_BYTES


def test_the_size_is_checked_before_the_bytes_are_parsed() -> None:
    """docs/api.md, Limits: one byte over the limit is REQUEST_TOO_LARGE, even if malformed."""
    at_limit = pb.RecogniseRequest(code="A" * (MAX_RECOGNISE_REQUEST_BYTES - 4))
    assert at_limit.ByteSize() == MAX_RECOGNISE_REQUEST_BYTES
    assert decode(pb.RecogniseRequest, at_limit.SerializeToString(), MAX_RECOGNISE_REQUEST_BYTES)
    with pytest.raises(RequestTooLargeError):
        decode(pb.RecogniseRequest, b"\xff" * (MAX_RECOGNISE_REQUEST_BYTES + 1), 32 * 1024)
    with pytest.raises(RequestMalformedError):
        decode(pb.RecogniseRequest, b"\xff" * MAX_RECOGNISE_REQUEST_BYTES, 32 * 1024)


def test_messages_over_a_methods_limit_are_resource_exhausted_with_a_reason(world) -> None:
    """docs/api.md, Limits: REQUEST_TOO_LARGE (RESOURCE_EXHAUSTED, metadata ``limit``) over a
    method's limit; a code under it but over 4096 characters stays an OVERSIZED decision; the
    largest legitimate submission passes the wire limit (and is judged as a submission)."""
    over = pb.RecogniseRequest(code="A" * MAX_RECOGNISE_REQUEST_BYTES).SerializeToString()
    long_code = pb.RecogniseRequest(code="A" * 5000).SerializeToString()
    over_small = b"\x08\x01" * (MAX_SMALL_REQUEST_BYTES // 2 + 1)
    junk = b"\xff" * (MAX_RECOGNISE_REQUEST_BYTES + 1)  # too large and malformed: size first
    largest = rpb.SubmissionRequest(submission=b"x" * MAX_ENVELOPE_BYTES).SerializeToString()

    async def body(gateway, channels, running) -> list[Any]:
        return [
            await call_raw(channels["verifier"], RECOGNISE, over),
            await call_raw(channels["verifier"], RECOGNISE, junk),
            await call_raw(channels["no-role"], HEALTH, over_small),
            await call_raw(channels["verifier"], RECOGNISE, long_code),
            await call_raw(channels["partner"], GET_LIST, over_small),
            await call_raw(channels["partner"], PUBLISH, largest),
            await call_raw(channels["partner"], PUBLISH, b"\x00" * (MAX_RECEIVE_BYTES + 1)),
        ]

    over_limit, junk_over, health, long_decision, small, submission, beyond = world(body)
    recognise_limit = MAX_RECOGNISE_REQUEST_BYTES
    for error, limit in (
        (over_limit, recognise_limit),
        (junk_over, recognise_limit),
        (health, 4096),
        (small, 4096),
    ):
        assert isinstance(error, grpc.aio.AioRpcError)
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info(error)
        assert (info.reason, info.metadata["limit"]) == ("REQUEST_TOO_LARGE", str(limit))
    decision = pb.RecogniseResponse.FromString(long_decision[0])
    assert (decision.recognised, decision.reason) == (False, "OVERSIZED")
    assert isinstance(submission, grpc.aio.AioRpcError)
    assert submission.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(submission).reason == "MALFORMED"  # the envelope, not the message size
    # Above the server-wide limit gRPC itself refuses, before any handler.
    assert isinstance(beyond, grpc.aio.AioRpcError)
    assert beyond.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


# --- refused streams: docs/api.md "Refused streams" --------------------------------------------


def outcome(error: grpc.aio.AioRpcError) -> str:
    """``CODE:REASON`` of an error (``CODE:-`` without ErrorInfo, as gRPC's own INTERNAL)."""
    status = rpc_status.from_call(error)
    if status is None or not status.details:
        return f"{error.code().name}:-"
    return f"{error.code().name}:{error_info(error).reason}"


async def stream_outcome(
    channel: grpc.aio.Channel, method: str, messages: list[bytes]
) -> tuple[list[bytes], str]:
    """Write ``messages`` to a stream as fast as gRPC takes them, then half-close: the
    responses, and ``OK`` or the error's ``CODE:REASON``."""
    call = channel.stream_stream(method)(iter(messages), timeout=20)
    responses: list[bytes] = []
    try:
        async for raw in call:
            responses.append(raw)
    except grpc.aio.AioRpcError as exc:
        return responses, outcome(exc)
    return responses, (await call.code()).name


def test_a_refused_stream_gets_its_own_status_every_time(world) -> None:
    """docs/api.md, Refused streams: 300 RecogniseStreams refused while the caller is still
    writing; every status is the refusal's own, with its reason (never INTERNAL)."""
    messages = [
        pb.RecogniseRequest(request_id=f"r{n}", code="x" * 200).SerializeToString()
        for n in range(20)
    ]

    async def body(gateway, channels, running) -> Counter[str]:
        seen: Counter[str] = Counter()
        for n in range(300):
            who = ("partner", "operator", "no-role")[n % 3]
            responses, status = await stream_outcome(channels[who], STREAM, messages)
            seen[f"{who}:{len(responses)}:{status}"] += 1
        return seen

    assert world(body) == {
        "partner:0:PERMISSION_DENIED:PERMISSION_DENIED": 100,
        "operator:0:PERMISSION_DENIED:PERMISSION_DENIED": 100,
        "no-role:0:UNAUTHENTICATED:UNAUTHENTICATED": 100,
    }


def test_bad_messages_mid_stream_are_answered_every_time_and_the_stream_ends_ok(
    world, codes
) -> None:
    """docs/api.md, Refused streams and Limits: 200 streams with a message over the method's
    limit, or bytes that are not protobuf, in the middle: every one answers all 20 messages in
    order (the bad one with its reason) and ends OK, never INTERNAL."""
    code = codes(REGION, NOW)()
    good = [
        pb.RecogniseRequest(request_id=f"r{n}", code=code).SerializeToString() for n in range(20)
    ]
    over = pb.RecogniseRequest(code="A" * MAX_RECOGNISE_REQUEST_BYTES).SerializeToString()
    streams = {
        "over-limit": (over, "REQUEST_TOO_LARGE"),
        "malformed": (NOT_UTF8, "REQUEST_MALFORMED"),
    }

    async def body(gateway, channels, running) -> Counter[str]:
        seen: Counter[str] = Counter()
        for n in range(200):
            name = ("over-limit", "malformed")[n % 2]
            bad, reason = streams[name]
            sent = [*good[:7], bad, *good[8:]]
            responses, status = await stream_outcome(channels["verifier"], STREAM, sent)
            answers = [pb.RecogniseResponse.FromString(raw) for raw in responses]
            expected = [f"r{i}" if i != 7 else "" for i in range(20)]
            in_order = [a.request_id for a in answers] == expected
            bad_answer = answers[7].reason if len(answers) > 7 else "-"
            seen[f"{name}:{len(answers)}:{in_order}:{bad_answer}:{status}"] += 1
            assert reason == bad_answer or status != "OK"
        return seen

    assert world(body) == {
        "over-limit:20:True:REQUEST_TOO_LARGE:OK": 100,
        "malformed:20:True:REQUEST_MALFORMED:OK": 100,
    }


def test_a_stream_that_fails_part_way_gets_its_own_status_every_time(world) -> None:
    """docs/api.md, Refused streams: a reflection stream whose fourth message is not protobuf
    ends INVALID_ARGUMENT / REQUEST_MALFORMED after its three answers, 150 times out of 150,
    although the caller is still writing when it fails."""
    ask = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    sent = [ask, ask, ask, TRUNCATED, *[ask] * 30]

    async def body(gateway, channels, running) -> Counter[str]:
        seen: Counter[str] = Counter()
        for _ in range(150):
            responses, status = await stream_outcome(channels["no-role"], REFLECTION, sent)
            seen[f"{len(responses)}:{status}"] += 1
        return seen

    assert world(body) == {"3:INVALID_ARGUMENT:REQUEST_MALFORMED": 150}


def test_a_recognise_stream_that_fails_part_way_gets_its_own_status_every_time(
    world, codes, monkeypatch
) -> None:
    """docs/api.md, Refused streams and RPC errors: a RecogniseStream that cannot go on (here:
    no gateway key may sign, CONFIGURATION) answers the requests before the failure, in order,
    then ends with that status while the caller is still writing, never INTERNAL: 60 times
    where the sixth decision's attestation cannot be signed, 60 where the sixth request needs a
    conversion (recorded while later requests are read ahead) that cannot be signed."""
    from gateway.runtime.gateway import Gateway as GatewayClass
    from keys.errors import ConfigurationError
    from keys.keystore import KeyRole

    show, convert = REGION_SPECS[0], REGION_SPECS[1]
    assert (show.mode.value, convert.mode.value) == ("show", "convert")
    show_code = codes(show.code, NOW)()
    new_code = codes(convert.code, NOW)
    plan = {"kind": "", "attestations": 0}
    real_signer = GatewayClass.signer

    def signer(self: Any, role: KeyRole, now: datetime) -> Any:
        if role is KeyRole.ATTEST:
            plan["attestations"] += 1
        if (plan["kind"], role) == ("conversion", KeyRole.ISSUE) or (
            plan["kind"] == "decision" and plan["attestations"] == 6
        ):
            raise ConfigurationError(f"no {role} key of the gateway is valid (test)")
        return real_signer(self, role, now)

    monkeypatch.setattr(GatewayClass, "signer", signer)

    def request(n: int, code: str) -> bytes:
        return pb.RecogniseRequest(request_id=f"r{n}", code=code).SerializeToString()

    async def body(gateway, channels, running) -> Counter[str]:
        seen: Counter[str] = Counter()
        for n in range(120):
            kind = ("decision", "conversion")[n % 2]
            plan.update(kind=kind, attestations=0)
            sent = [request(i, show_code) for i in range(40)]
            if kind == "conversion":
                sent[5] = request(5, new_code())  # never seen: a new conversion
            responses, status = await stream_outcome(channels["verifier"], STREAM, sent)
            answers = [pb.RecogniseResponse.FromString(raw).request_id for raw in responses]
            seen[f"{kind}:{answers == [f'r{i}' for i in range(5)]}:{status}"] += 1
        return seen

    assert world(body) == {
        "conversion:True:FAILED_PRECONDITION:CONFIGURATION": 60,
        "decision:True:FAILED_PRECONDITION:CONFIGURATION": 60,
    }


def test_a_recognise_stream_that_fails_while_the_caller_waits_still_ends(
    world, codes, monkeypatch
) -> None:
    """docs/api.md, Refused streams: the read-out after a failure is bounded (here shortened to
    0.2 s): a caller that writes and then waits without half-closing gets the failure's own
    status (CONFIGURATION), not its deadline, whether the failure came from a decision or from
    a conversion."""
    from gateway.grpc import interceptors
    from gateway.runtime.gateway import Gateway as GatewayClass
    from keys.errors import ConfigurationError
    from keys.keystore import KeyRole

    monkeypatch.setattr(interceptors, "DRAIN_SECONDS", 0.2)
    show, convert = REGION_SPECS[0], REGION_SPECS[1]
    failing: list[KeyRole] = []
    real_signer = GatewayClass.signer

    def signer(self: Any, role: KeyRole, now: datetime) -> Any:
        if role in failing:
            raise ConfigurationError(f"no {role} key of the gateway is valid (test)")
        return real_signer(self, role, now)

    monkeypatch.setattr(GatewayClass, "signer", signer)
    show_code, new_code = codes(show.code, NOW)(), codes(convert.code, NOW)

    async def body(gateway, channels, running) -> list[str]:
        seen = []
        for role, code in ((KeyRole.ATTEST, show_code), (KeyRole.ISSUE, new_code())):
            failing[:] = [role]
            call = channels["verifier"].stream_stream(STREAM)(timeout=20)
            await call.write(pb.RecogniseRequest(request_id="r0", code=code).SerializeToString())
            try:  # no half-close: the caller waits for an answer
                await call.read()
            except grpc.aio.AioRpcError as exc:
                seen.append(outcome(exc))
        return seen

    assert world(body) == ["FAILED_PRECONDITION:CONFIGURATION"] * 2


def test_a_method_the_gateway_does_not_serve_is_unimplemented_every_time(world) -> None:
    """docs/api.md, RPC errors and Refused streams: UNIMPLEMENTED with reason METHOD_UNKNOWN for
    a stream to a service the gateway does not have (grpcurl asks reflection v1 first), an
    unknown method of a known service, and a method not served (health's List), 100 each;
    never INTERNAL, and counted under one label whatever the path."""
    messages = [b"\x0a\x01x"] * 20
    paths = (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/gateway.api.v1.RecognitionService/NoSuchMethod",
        "/grpc.health.v1.Health/List",
    )

    async def body(gateway, channels, running) -> tuple[Counter[str], Any]:
        seen: Counter[str] = Counter()
        for n in range(300):
            path = paths[n % 3]
            if n % 6 < 3:
                responses, status = await stream_outcome(channels["verifier"], path, messages)
                seen[f"{path}:stream:{len(responses)}:{status}"] += 1
            else:
                result = await call_raw(channels["verifier"], path, messages[0])
                assert isinstance(result, grpc.aio.AioRpcError)
                seen[f"{path}:unary:{outcome(result)}"] += 1
        count = gateway.metrics.registry.get_sample_value(
            "trustgw_bad_requests_total", {"method": "unknown", "reason": "METHOD_UNKNOWN"}
        )
        return seen, count

    seen, count = world(body)
    assert seen == {
        f"{path}:{shape}": 50
        for path in paths
        for shape in ("stream:0:UNIMPLEMENTED:METHOD_UNKNOWN", "unary:UNIMPLEMENTED:METHOD_UNKNOWN")
    }
    assert count == 300


def test_a_refused_watch_gets_its_own_status_every_time(world) -> None:
    """docs/api.md, Refused streams: WatchTrustList refusals (no role, a negative version)."""
    negative = rpb.WatchTrustListRequest(since_version=-1).SerializeToString()

    async def body(gateway, channels, running) -> Counter[str]:
        seen: Counter[str] = Counter()
        for n in range(200):
            who = ("no-role", "verifier")[n % 2]
            result = await call_raw(channels[who], WATCH, negative)
            seen[f"{who}:{getattr(result, 'code', lambda: 'OK')().name}"] += 1
        return seen

    assert world(body) == {"no-role:UNAUTHENTICATED": 100, "verifier:INVALID_ARGUMENT": 100}


def test_streams_refused_during_a_drain_get_unavailable_every_time(world) -> None:
    """docs/api.md, Refused streams, and "Shutdown, as seen by a client": a stream that reaches
    a draining gateway is UNAVAILABLE (safe to retry elsewhere), never INTERNAL."""
    import asyncio

    messages = [
        pb.RecogniseRequest(request_id=f"r{n}", code="x" * 200).SerializeToString()
        for n in range(20)
    ]

    async def body(gateway, channels, running) -> Counter[str]:
        seen: Counter[str] = Counter()
        drain = asyncio.ensure_future(running.requests.drain(60))
        try:
            for _ in range(100):
                call = channels["verifier"].stream_stream(STREAM)(iter(messages), timeout=10)
                try:
                    async for _ in call:
                        seen["answered"] += 1
                except grpc.aio.AioRpcError as exc:
                    seen[exc.code().name] += 1
        finally:
            drain.cancel()
        return seen

    assert world(body) == {"UNAVAILABLE": 100}


def test_a_refused_caller_that_never_half_closes_still_gets_its_status(world, monkeypatch) -> None:
    """docs/api.md, Refused streams: the gateway reads a refused stream for a bounded time only
    (here shortened to 0.2 s): a caller that writes and then waits is answered anyway."""
    from gateway.grpc import interceptors

    monkeypatch.setattr(interceptors, "DRAIN_SECONDS", 0.2)
    one = pb.RecogniseRequest(request_id="r0", code="x").SerializeToString()

    async def body(gateway, channels, running) -> grpc.StatusCode:
        call = channels["partner"].stream_stream(STREAM)(timeout=10)
        await call.write(one)  # and no half-close
        return await call.code()

    assert world(body) is grpc.StatusCode.PERMISSION_DENIED


def test_freed_memory_is_trimmed_only_above_the_slack_with_back_off() -> None:
    """docs/api.md, Limits: the C heap is trimmed when the resident set is more than 32 MB above
    its size at start; a trim that cannot bring it down is retried later, not every second."""
    from gateway.runtime.memory import MemoryReleaser

    resident = [100]
    trims: list[int] = []

    def trim() -> None:
        trims.append(resident[0])
        resident[0] = max(100, resident[0] - freeable[0])

    freeable = [0]
    releaser = MemoryReleaser(slack=32, resident=lambda: resident[0], trim=trim, max_backoff=8)
    resident[0] = 132
    assert not releaser.due(0.0)  # within the slack
    resident[0], freeable[0] = 400, 300  # a burst, freed but kept by the allocator
    assert releaser.due(1.0)
    releaser.release(1.0)
    assert (trims, resident[0], releaser.due(2.0)) == ([400], 100, False)
    resident[0], freeable[0] = 300, 0  # memory in use: trimming does not help
    releaser.release(3.0)
    assert not releaser.due(3.5) and releaser.due(4.0)  # back-off of 1 s
    releaser.release(4.0)
    assert not releaser.due(5.9) and releaser.due(6.0)  # then 2 s
    assert MemoryReleaser(resident=lambda: None, trim=trim).due(100.0) is False
