"""gRPC fuzzing of a real server: random codes, random field values and random wire bytes to
every method of the port, unary and streaming, from callers allowed to make the call.

docs/api.md: no ``INTERNAL`` and no ``UNKNOWN`` whatever arrives; every refusal the gateway
makes on purpose carries an ``ErrorInfo`` with a stable reason; a code that is not recognised is
a decision with a reason from the "Decisions" table, never an RPC error; a stream answers every
message in order. The inputs and the server are bench/fuzz_memory.py's (which also measures the
server's memory over a long run); here hypothesis draws them (derandomised: the same examples
on every run) and only statuses are asserted. The server must still be serving at the end.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.clock import REAL_NOW

from bench.fuzz_memory import BY_PATH, METHODS, PARTNER_REGION, Method, World, call, serving
from gateway.api.v1 import declaration_pb2 as dpb
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import registry_pb2 as rpb

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.doc(
        'api.md "The order of checks on every call"',
        'api.md "RPC errors"',
        'api.md "Decisions"',
        'api.md "RecogniseStream"',
    ),
]

FUZZ = settings(
    max_examples=120,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
RECOGNISE = BY_PATH["/gateway.api.v1.RecognitionService/Recognise"]
STREAM = BY_PATH["/gateway.api.v1.RecognitionService/RecogniseStream"]


def documented_decision_reasons() -> set[str]:
    """The reasons of api.md's "Decisions" table, read from the page."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text(encoding="utf-8")
    table = text.split("### Decisions", 1)[1].split("\n\n", 2)[1]
    return set(re.findall(r"^\| `([A-Z_]+)` \|", table, re.MULTILINE))


DECISIONS = documented_decision_reasons()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with serving(tmp_path_factory.mktemp("fuzz"), REAL_NOW) as running:  # a real server's clock
        yield running
        # still serving after everything the tests sent
        check = BY_PATH["/grpc.health.v1.Health/Check"]
        outcome = call(running.channels["verifier"], check, [b""])
        assert outcome.status == "OK"
        assert health_pb2.HealthCheckResponse.FromString(outcome.responses[0]).status == 1


def no_finding(method: Method, messages: list[bytes], world: World) -> list[bytes]:
    outcome = call(world.channels[method.role], method, messages)
    assert outcome.finding is None, (method.path, outcome, [m.hex() for m in messages])
    return outcome.responses


# --- codes --------------------------------------------------------------------------------------

ALPHABET = st.characters(codec="utf-8", exclude_categories=("Cs",))


@st.composite
def codes(draw: st.DrawFn, world_codes: list[str]) -> str:
    """A valid code with a few edits, or random text, or random text behind a real prefix."""
    kind = draw(st.sampled_from(["edit", "edit", "text", "prefix"]))
    if kind == "text":
        return draw(st.text(ALPHABET, max_size=600))
    code = draw(st.sampled_from(world_codes))
    if kind == "prefix":
        cut = draw(st.integers(1, 30))
        return code[:cut] + draw(st.text(ALPHABET, max_size=400))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(code)))
        op = draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        char = draw(ALPHABET)
        code = {
            "replace": code[:at] + char + code[at + 1 :],
            "insert": code[:at] + char + code[at:],
            "delete": code[:at] + code[at + 1 :],
            "cut": code[:at],
        }[op]
    return code


def test_random_codes_get_a_documented_decision(world: World) -> None:
    @FUZZ
    @given(code=codes(world.codes))
    def check(code: str) -> None:
        request = pb.RecogniseRequest(request_id="fuzz", code=code)
        outcome = call(world.channels["verifier"], RECOGNISE, [request.SerializeToString()])
        assert outcome.status == "OK", (code, outcome)
        reply = pb.RecogniseResponse.FromString(outcome.responses[0])
        assert reply.reason in DECISIONS, (code, reply.reason)
        assert reply.recognised == (reply.reason == "RECOGNISED")
        assert reply.message and reply.request_id == "fuzz"

    check()


def test_a_stream_of_random_codes_is_answered_in_order(world: World) -> None:
    @FUZZ
    @given(batch=st.lists(codes(world.codes), min_size=1, max_size=12))
    def check(batch: list[str]) -> None:
        messages = [
            pb.RecogniseRequest(request_id=f"c{i}", code=c).SerializeToString()
            for i, c in enumerate(batch)
        ]
        responses = no_finding(STREAM, messages, world)
        replies = [pb.RecogniseResponse.FromString(r) for r in responses]
        assert [r.request_id for r in replies] == [f"c{i}" for i in range(len(batch))]
        assert all(r.reason in DECISIONS for r in replies)

    check()


# --- field values -------------------------------------------------------------------------------


ID_NUMBER = "110101199003071233"  # a valid resident ID number (GB 11643 check digit)


def field_values(method: Method) -> st.SearchStrategy[bytes]:
    """A well-formed request of the method's type, with random values in every field."""
    text = st.text(ALPHABET, max_size=200)
    int64 = st.integers(-(2**63), 2**63 - 1)
    request = method.request
    if request is pb.RecogniseRequest:
        message = st.builds(
            pb.RecogniseRequest,
            request_id=text,
            code=text,
            region_hint=st.one_of(text, st.sampled_from(["", PARTNER_REGION, "370000", "1234567"])),
        )
    elif request is rpb.SubmissionRequest:
        message = st.builds(rpb.SubmissionRequest, submission=st.binary(max_size=2000))
    elif request is dpb.DeclareRequest:
        day = st.one_of(text, st.dates().map(date.isoformat))
        message = st.builds(
            dpb.DeclareRequest,
            request_id=text,
            id_number=st.one_of(text, st.sampled_from([ID_NUMBER, ID_NUMBER.lower()])),
            origin=st.one_of(text, st.sampled_from(["110000", "420100", "JP", "CN", "370000"])),
            arrival_date=day,
            places=st.lists(st.one_of(text, st.sampled_from(["110000", "KR"])), max_size=40),
            temperature_celsius=st.floats(allow_nan=True, allow_infinity=True),
            dry_cough=st.booleans(),
            fatigue=st.booleans(),
            case_status=st.integers(-5, 10),
            discharged_on=day,
            isolation_start=day,
            isolation_end=day,
            observation_end=day,
            partner_code=st.one_of(text, st.just("BJ1:" + "A" * 40)),
        )
    elif request is dpb.GetDeclarationRequest:
        message = st.builds(dpb.GetDeclarationRequest, declaration_id=text)
    elif request in (rpb.GetTrustListRequest, rpb.WatchTrustListRequest):
        # a watch from a version not reached yet waits for the next one: its deadline ends it
        message = st.builds(request, since_version=int64)
    elif request is health_pb2.HealthCheckRequest:
        message = st.builds(health_pb2.HealthCheckRequest, service=text)
    elif request is reflection_pb2.ServerReflectionRequest:
        message = st.one_of(
            *(
                st.builds(reflection_pb2.ServerReflectionRequest, host=text, **{field: text})
                for field in (
                    "list_services",
                    "file_by_filename",
                    "file_containing_symbol",
                    "all_extension_numbers_of_type",
                )
            )
        )
    else:
        message = st.just(request())
    return message.map(lambda m: m.SerializeToString())


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.path.rsplit("/", 1)[1])
def test_random_field_values_never_get_internal_or_unknown(world: World, method: Method) -> None:
    count = (1, 4) if method.kind == "bidi" else (1, 1)

    @settings(FUZZ, max_examples=80)
    @given(messages=st.lists(field_values(method), min_size=count[0], max_size=count[1]))
    def check(messages: list[bytes]) -> None:
        responses = no_finding(method, messages, world)
        if method is STREAM:
            assert len(responses) == len(messages)  # every message answered, none an RPC error

    check()


# --- wire bytes ---------------------------------------------------------------------------------

WIRE = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.tuples(st.sampled_from([b"\x0a", b"\x12", b"\x08", b"\x1a"]), st.binary(max_size=40)).map(
        b"".join
    ),
)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.path.rsplit("/", 1)[1])
def test_random_wire_bytes_never_get_internal_or_unknown(world: World, method: Method) -> None:
    count = (1, 5) if method.kind == "bidi" else (1, 1)

    @settings(FUZZ, max_examples=80)
    @given(messages=st.lists(WIRE, min_size=count[0], max_size=count[1]))
    def check(messages: list[bytes]) -> None:
        responses = no_finding(method, messages, world)
        if method is STREAM:
            # api.md "RecogniseStream": a message that is not a RecogniseRequest is answered
            # in its place (REQUEST_MALFORMED) and the stream goes on
            assert len(responses) == len(messages)
            for response in responses:
                assert pb.RecogniseResponse.FromString(response).reason in DECISIONS

    check()


# --- who may call what --------------------------------------------------------------------------


@pytest.mark.doc('api.md "Who may call what"', "trust-registry.md §12")
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.path.rsplit("/", 1)[1])
@pytest.mark.parametrize("role", ["verifier", "partner", "operator", "declarant", "tracer"])
def test_each_role_may_make_exactly_the_calls_the_table_gives_it(
    world: World, method: Method, role: str
) -> None:
    """The table of api.md "Who may call what"; health and reflection are open to all."""
    service = method.path.split("/")[1].rsplit(".", 1)[1]
    allowed = {
        "RecognitionService": {"verifier"},
        "PartnerService": {"partner"},
        "TrustListService": {"verifier", "partner", "operator"},
        "DeclarationService": {"declarant"},
        "TracingService": {"tracer"},
        "Health": {"verifier", "partner", "operator", "declarant", "tracer"},
        "ServerReflection": {"verifier", "partner", "operator", "declarant", "tracer"},
    }[service]
    if method.path.endswith("/GetGatewayKeys"):
        allowed = {"verifier", "partner", "operator"}
    outcome = call(world.channels[role], method, [b""])
    assert outcome.finding is None, outcome
    if role in allowed:
        assert outcome.status != "PERMISSION_DENIED", outcome
    else:
        assert (outcome.status, outcome.reason) == ("PERMISSION_DENIED", "PERMISSION_DENIED")


# --- the request's own fields and metadata ----------------------------------------------------


def recognise(world: World, request: pb.RecogniseRequest, metadata=()) -> tuple[str, Any, dict]:
    """(status, the reply or the error, trailing metadata) of one Recognise."""
    stub = world.channels["verifier"].unary_unary(RECOGNISE.path)
    try:
        data, call = stub.with_call(request.SerializeToString(), timeout=30, metadata=metadata)
    except grpc.RpcError as error:
        return error.code().name, error, dict(error.trailing_metadata() or ())
    return "OK", pb.RecogniseResponse.FromString(data), dict(call.trailing_metadata() or ())


@pytest.mark.doc('api.md "Messages"', 'api.md "RPC errors"')
@pytest.mark.parametrize(
    ("request_id", "hint", "expected"),
    [
        pytest.param("r" * 128, "", "OK", id="request-id-128"),
        pytest.param("r" * 129, "", "INVALID_REQUEST", id="request-id-129"),
        pytest.param("码" * 128, "", "OK", id="request-id-128-non-ascii"),
        pytest.param("r", PARTNER_REGION, "OK", id="hint-of-the-code"),
        pytest.param("r", "120000", "REGION_MISMATCH", id="hint-of-another-region"),
        pytest.param("r", "11000", "INVALID_REQUEST", id="hint-5-digits"),
        pytest.param("r", "abcdef", "INVALID_REQUEST", id="hint-not-digits"),
        pytest.param("r", "\uff11" * 6, "INVALID_REQUEST", id="hint-full-width-digits"),
    ],
)
def test_request_fields_follow_the_messages_table(
    world: World, request_id: str, hint: str, expected: str
) -> None:
    """Unary: an RPC error with ErrorInfo; in a stream the same request is answered in place."""
    code = next(c for c in world.codes if c.startswith("BJ1:"))
    request = pb.RecogniseRequest(request_id=request_id, code=code, region_hint=hint)
    status, reply, trailers = recognise(world, request)
    if expected == "INVALID_REQUEST":
        assert status == "INVALID_ARGUMENT"
        info = _error_info(reply)
        assert info.reason == "INVALID_REQUEST"
        assert info.metadata["request_id"] == trailers["x-request-id"]
    else:
        assert status == "OK"
        assert reply.request_id == request_id
        assert reply.reason != "INVALID_REQUEST"
        if expected == "REGION_MISMATCH":
            assert reply.reason == "REGION_MISMATCH" and not reply.recognised
    responses = no_finding(STREAM, [request.SerializeToString()], world)
    answer = pb.RecogniseResponse.FromString(responses[0])
    assert (answer.reason == "INVALID_REQUEST") == (expected == "INVALID_REQUEST")
    assert not answer.recognised or expected == "OK"


def _error_info(error: Any) -> Any:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)
    info = error_details_pb2.ErrorInfo()
    assert status is not None and status.details[0].Unpack(info)
    assert info.domain == "trustgw.gateway"
    return info


@pytest.mark.doc('api.md "Metadata"')
@pytest.mark.parametrize(
    ("given", "echoed"),
    [
        pytest.param("checkpoint-7:scan.0001_A", True, id="every-allowed-character"),
        pytest.param("x" * 64, True, id="64-characters"),
        pytest.param("x" * 65, False, id="65-characters"),
        pytest.param("a b", False, id="space"),
        pytest.param("a/b", False, id="slash"),
        pytest.param("", False, id="empty"),
    ],
)
@pytest.mark.parametrize("refused", [False, True], ids=["decision", "rpc-error"])
def test_the_request_id_header_is_echoed_or_replaced(
    world: World, given: str, echoed: bool, refused: bool
) -> None:
    """The caller's ``x-request-id`` when it fits ``[A-Za-z0-9._:-]{1,64}``, else one the
    gateway makes (16 hex digits), in the trailers of every response, errors included."""
    request = pb.RecogniseRequest(request_id="x" * 129 if refused else "r", code="junk")
    status, reply, trailers = recognise(world, request, metadata=(("x-request-id", given),))
    assert status == ("INVALID_ARGUMENT" if refused else "OK")
    sent_back = trailers["x-request-id"]
    if echoed:
        assert sent_back == given
    else:
        assert re.fullmatch(r"[0-9a-f]{16}", sent_back), sent_back
    if refused:
        assert _error_info(reply).metadata["request_id"] == sent_back
