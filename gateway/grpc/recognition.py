"""``RecognitionService``, for local verifiers: recognise codes (unary and streaming) and
fetch the gateway's keys. docs/api.md, "RecognitionService".
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, ClassVar, TypeAlias

import grpc

from adapters.base import Colour
from gateway.api.v1 import recognition_pb2 as pb
from gateway.engine import PendingRecognition, Recognition
from gateway.grpc import interceptors
from gateway.grpc.errors import note_bad_request
from gateway.grpc.methods import (
    MAX_RECOGNISE_REQUEST_BYTES,
    MAX_SMALL_REQUEST_BYTES,
    Method,
    decode,
)
from gateway.grpc.visits import record_visit
from gateway.observability import note_outcome
from gateway.pki import Role
from gateway.places.book import PlaceOutcome
from gateway.runtime.gateway import Gateway
from keys.errors import InvalidRequestError
from keys.keylabels import labelled
from keys.model import HOME_REGION, Mode
from keys.personal import RecognitionEntry
from keys.regioncode import is_region_code
from keys.timeutil import to_unix, utcnow

# A decision waiting for its conversion's commit, with the id of the request it answers and
# the outcome of the place code sent with it (None: none was).
_Waiting: TypeAlias = tuple[str, PendingRecognition, PlaceOutcome | None]
MAX_REQUEST_ID_CHARS = 128
STREAM_WINDOW = 64  # unanswered requests read ahead per stream
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RecognitionService"].full_name

_COLOURS = {
    None: pb.COLOUR_UNSPECIFIED,
    Colour.GREEN: pb.COLOUR_GREEN,
    Colour.YELLOW: pb.COLOUR_YELLOW,
    Colour.RED: pb.COLOUR_RED,
}
_MODES = {None: pb.MODE_UNSPECIFIED, Mode.SHOW: pb.MODE_SHOW, Mode.CONVERT: pb.MODE_CONVERT}


def _check_request(request: pb.RecogniseRequest) -> None:
    if len(request.request_id) > MAX_REQUEST_ID_CHARS:
        raise InvalidRequestError(f"request_id is longer than {MAX_REQUEST_ID_CHARS} characters")
    if request.region_hint and not is_region_code(request.region_hint):
        raise InvalidRequestError("region_hint must be a 6-digit division code")


def decision_to_proto(request_id: str, decision: Recognition) -> pb.RecogniseResponse:
    response = pb.RecogniseResponse(
        request_id=request_id,
        recognised=decision.recognised,
        reason=decision.reason,
        message=decision.message,
        region=decision.region,
        mode=_MODES[decision.mode],
        colour=_COLOURS[decision.colour],
    )
    if decision.valid_until is not None:
        response.valid_until = to_unix(decision.valid_until)
    # Sub-messages filled in place (no message built to be copied: once per decision).
    if decision.attestation is not None:
        att = decision.attestation
        out = response.attestation
        out.payload, out.key_id, out.alg, out.signature = (
            att.payload,
            att.kid,
            att.alg,
            att.signature,
        )
    if decision.converted is not None:
        conv = decision.converted
        code = response.converted
        code.code, code.key_id, code.expires_at, code.code_id = (
            conv.code,
            conv.kid,
            to_unix(conv.expires_at),
            conv.code_id,
        )
    return response


class RecognitionService:
    """For local verifiers: recognise codes, fetch the gateway's keys."""

    service = pb.DESCRIPTOR.services_by_name["RecognitionService"]
    methods: ClassVar[dict[str, Method]] = {
        "Recognise": Method((Role.VERIFIER,), MAX_RECOGNISE_REQUEST_BYTES),
        "RecogniseStream": Method((Role.VERIFIER,), MAX_RECOGNISE_REQUEST_BYTES, raw_stream=True),
        "GetGatewayKeys": Method(
            (Role.VERIFIER, Role.PARTNER, Role.OPERATOR), MAX_SMALL_REQUEST_BYTES
        ),
    }

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        # The metric children by label values, bound once: ``labels()`` takes a lock and
        # builds a key per call. The label values are bounded (regions x modes x reasons).
        self._counted: dict[tuple[str, str, bool, str], Any] = {}
        self._converted: dict[str, Any] = {}

    def _count(self, decision: Recognition) -> None:
        metrics = self._gateway.metrics
        mode = decision.mode.value if decision.mode else "-"
        key = (decision.region or "-", mode, decision.recognised, decision.reason)
        child = self._counted.get(key)
        if child is None:
            if len(self._counted) >= 4096:  # never unbounded, whatever the decisions carry
                self._counted.clear()
            child = self._counted[key] = metrics.recognitions.labels(
                key[0], mode, "recognised" if decision.recognised else "refused", decision.reason
            )
        child.inc()
        if decision.converted is not None:
            conv = self._converted.get(decision.region)
            if conv is None:
                if len(self._converted) >= 4096:
                    self._converted.clear()
                conv = self._converted[decision.region] = metrics.conversions.labels(
                    decision.region
                )
            conv.inc()

    def _respond(
        self, request_id: str, decision: Recognition, place: PlaceOutcome | None = None
    ) -> pb.RecogniseResponse:
        note_outcome(decision.region, decision.reason)
        self._count(decision)
        now = utcnow()
        reclog = self._gateway.reclog
        if reclog is not None:  # queued in memory; written in batches off the request path
            reclog.record(
                RecognitionEntry(
                    now,
                    decision.region,
                    decision.mode.value if decision.mode else "",
                    "recognised" if decision.recognised else "refused",
                    decision.reason,
                    decision.holder,
                    decision.code_id,
                    decision.kid,
                    request_id,
                )
            )
        response = decision_to_proto(request_id, decision)
        if place is not None:  # beside the decision, never changing it (docs/api.md)
            record_visit(self._gateway, response, decision, place, now)
        return response

    def _place(self, request: pb.RecogniseRequest, now: datetime) -> PlaceOutcome | None:
        """The outcome of the request's place code, checked in memory; None without one."""
        return self._gateway.places.check(request.place, now) if request.place else None

    def _start(self, request: pb.RecogniseRequest) -> pb.RecogniseResponse | _Waiting:
        """The response to a checked request, or, when the decision waits for I/O (a new
        conversion's commit, an online code's status), the request id and the pending
        decision. In a stream each online lookup has its region's own deadline."""
        now = utcnow()
        result = self._gateway.recogniser.start(request.code, now, request.region_hint)
        place = self._place(request, now)
        if isinstance(result, Recognition):
            return self._respond(request.request_id, result, place)
        return request.request_id, result, place

    def _start_in_stream(self, raw: bytes) -> pb.RecogniseResponse | _Waiting:
        """As :meth:`_start` for one message of a stream; a bad request (not a message, too
        large, invalid fields) is answered in its place, not fatal to the stream."""
        request_id = ""
        try:
            request = decode(pb.RecogniseRequest, raw, MAX_RECOGNISE_REQUEST_BYTES)
            request_id = request.request_id
            _check_request(request)
        except InvalidRequestError as exc:
            note_bad_request(self._gateway.metrics, "RecogniseStream", exc)
            return pb.RecogniseResponse(
                request_id=request_id[:MAX_REQUEST_ID_CHARS],
                recognised=False,
                reason=exc.reason,
                message=exc.message,
            )
        return self._start(request)

    async def Recognise(
        self, request: pb.RecogniseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RecogniseResponse:
        _check_request(request)
        # The call's remaining time: an online code's lookup takes at most a share of it.
        now = utcnow()
        result = self._gateway.recogniser.start(
            request.code, now, request.region_hint, context.time_remaining()
        )
        place = self._place(request, now)
        if not isinstance(result, Recognition):  # one await: a commit or an online lookup
            result = await result
        return self._respond(request.request_id, result, place)

    async def RecogniseStream(
        self, requests: interceptors.RequestStream, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.RecogniseResponse]:
        """Answers every request in order. Requests are read ahead while a decision waits for
        I/O (a conversion being committed), up to ``STREAM_WINDOW`` unanswered ones.

        When the stream fails (the store is unreachable for a conversion, no signing key is
        valid), the reader stops deciding and reads out what the caller is still writing, within
        the one drain budget (``interceptors.DRAIN_SECONDS``), before the status goes out."""
        # The answers in order, read ahead: a deque and two futures made only when one side
        # must wait (no queue's coroutines and wake-ups for each message).
        answers: deque[pb.RecogniseResponse | _Waiting] = deque()
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] | None = None  # the handler waits for an answer or the end
        room: asyncio.Future[None] | None = None  # the reader waits for room in the window
        failed = ended = False

        def wake(future: asyncio.Future[None] | None) -> None:
            if future is not None and not future.done():
                future.set_result(None)

        async def read() -> None:
            nonlocal ended, ready, room
            try:
                async for raw in requests:
                    if failed:
                        break
                    answers.append(self._start_in_stream(raw))
                    if ready is not None:
                        wake(ready)
                        ready = None
                    if len(answers) >= STREAM_WINDOW:  # none read on until one is answered
                        room = loop.create_future()
                        await room
                if failed:  # gRPC allows one read at a time: this task drains, not the handler
                    await requests.drain()
            finally:
                ended = True
                wake(ready)

        reader = asyncio.create_task(read())
        try:
            while True:
                if not answers:
                    if ended:
                        break
                    ready = loop.create_future()
                    await ready
                    continue
                answer = answers.popleft()
                if room is not None:
                    wake(room)
                    room = None
                if isinstance(answer, tuple):  # its conversion was committing: no task each
                    request_id, pending, place = answer
                    decision = pending.result() if pending.done else await pending
                    answer = self._respond(request_id, decision, place)
                yield answer
            await reader  # re-raises what ended the request stream, if anything did
        except Exception:
            failed = True
            answers.clear()  # dropped: a pending decision's commit is shared, never cancelled
            wake(room)  # a reader waiting for room goes on, and stops
            if not reader.done():  # past the budget it is cancelled: the status goes anyway
                await asyncio.wait((reader,), timeout=interceptors.DRAIN_SECONDS)
            if reader.done() and not reader.cancelled():
                reader.exception()  # retrieved: the stream's own failure is the one raised
            raise
        finally:
            reader.cancel()
            answers.clear()

    async def GetGatewayKeys(
        self, request: pb.GetGatewayKeysRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GatewayKeys:
        now = utcnow()  # read once: every key's status at the same instant
        return pb.GatewayKeys(
            region=HOME_REGION,
            keys=[
                pb.GatewayKey(
                    key_id=info.kid,
                    role=info.role.value,
                    alg=str(info.public_key.alg),
                    public_key=info.public_key.spki,
                    not_before=to_unix(info.not_before),
                    not_after=to_unix(info.not_after),
                    status=label.value,
                    revoked_at=0 if info.revoked_at is None else to_unix(info.revoked_at),
                )
                for info, label in labelled(self._gateway.published_keys(), now)
            ],
        )
