"""A typed Python client of the gateway, for verifiers and partners: async and blocking.

Results are frozen dataclasses of plain Python types, never protobuf messages::

    from gateway.pki import TlsFiles
    from gateway.sdk import GatewayClient

    tls = TlsFiles(cert=Path("checkpoint.pem"), key=Path("checkpoint.key"), ca=Path("ca.pem"))
    with GatewayClient("gateway.example:50051", tls=tls) as client:
        decision = client.recognise(scanned_text)
        if decision.recognised: ...

The target is one ``HOST:PORT`` (a DNS name with several records reaches every replica) or a list
of replicas' ``IP:PORT`` (over TLS with ``server_name=``, the name in their certificates). Calls
are spread round robin over the replicas that report SERVING on ``grpc.health.v1``; an idempotent
call refused with UNAVAILABLE is retried at once on another replica (gRPC's ``retryPolicy``, see
:mod:`gateway.sdk.targets` and docs/api.md "Several gateways").

Every call has a deadline (``timeout``, seconds, covering all its attempts). Idempotent calls are
retried with exponential backoff and full jitter, only when the gateway was UNAVAILABLE (not
reachable, or shutting down and refusing calls it had not started): such a call was never
processed. Every call sends an ``x-request-id`` and every result carries the id the gateway
logged it under. RPC errors raise :class:`GatewayRpcError` with the gateway's stable reason.

A request larger than its method accepts (:data:`gateway.limits.REQUEST_LIMITS`, docs/api.md
"Limits") is refused before it is sent, with the reason the gateway would give
(``REQUEST_TOO_LARGE``, status ``RESOURCE_EXHAUSTED``, metadata ``limit``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2

from gateway import tokens
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.limits import REQUEST_LIMITS, too_large
from gateway.pki import TlsFiles
from gateway.sdk.channel import aio_channel
from gateway.sdk.results import (
    ConvertedCode,
    Decision,
    SignedTrustList,
    SubmissionReceipt,
    decision_from_proto,
    receipt_from_proto,
    trust_from_proto,
    trust_list_from_proto,
)
from gateway.sdk.status import CodeStatusAnswer, new_nonce
from keys.errors import GatewayRpcError

DEFAULT_TIMEOUT = 5.0
REQUEST_ID_HEADER = "x-request-id"
_STATUS_DETAILS = "grpc-status-details-bin"

T = TypeVar("T")

_RECOGNITION = "/gateway.api.v1.RecognitionService/"
_PARTNER = "/gateway.api.v1.PartnerService/"
_TRUSTLIST = "/gateway.api.v1.TrustListService/"


def error_from_grpc(exc: grpc.aio.AioRpcError) -> GatewayRpcError:
    """The :class:`~keys.errors.GatewayRpcError` for a failed call: its status, the gateway's
    reason and details from the ``google.rpc.ErrorInfo``, and the request id."""
    trailing = tuple(exc.trailing_metadata() or ())
    request_id = next((str(v) for k, v in trailing if k == REQUEST_ID_HEADER), "")
    reason: str | None = None
    metadata: dict[str, str] = {}
    for key, value in trailing:
        if key == _STATUS_DETAILS and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    reason, metadata = info.reason, dict(info.metadata)
    # The gateway also names the request id in the ErrorInfo; the trailer is the same id.
    request_id = request_id or metadata.get("request_id", "")
    metadata.pop("request_id", None)
    code = exc.code()
    name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    return GatewayRpcError(name, exc.details() or name, reason, request_id, **metadata)


def request_too_large(size: int, limit: int) -> GatewayRpcError:
    """The error for a request refused before it was sent, as the gateway would refuse it
    (``RESOURCE_EXHAUSTED``, reason ``REQUEST_TOO_LARGE``)."""
    return GatewayRpcError(
        "RESOURCE_EXHAUSTED", too_large(size, limit), "REQUEST_TOO_LARGE", limit=str(limit)
    )


# --- retries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt ``n`` (from 1) waits a random time up to
    ``min(max_backoff, initial_backoff * multiplier ** (n - 1))`` before the next attempt."""

    attempts: int = 4  # total, including the first
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and the multiplier >= 1")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The wait after attempt number ``attempt`` (from 1), drawn at random from ``rng``."""
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return rng.uniform(0, cap)


def new_request_id() -> str:
    """A fresh request id: 16 random hex digits."""
    return uuid.uuid4().hex[:16]


def check_size(method: str, request: Any) -> None:
    """Refuse ``request`` for the gateway's ``method`` (its full name) when it is larger than the
    method accepts: :class:`GatewayRpcError` ``REQUEST_TOO_LARGE``, before anything is sent."""
    limit = REQUEST_LIMITS[method]
    size = request.ByteSize()
    if size > limit:
        raise request_too_large(size, limit)


# --- the async client -------------------------------------------------------------------------


class AsyncGatewayClient:
    """An asyncio client. Use ``async with`` or call :meth:`close`.

    ``target`` is one ``HOST:PORT`` or a list of the replicas' ``IP:PORT``
    (:func:`gateway.sdk.targets.resolve_target`). ``tls`` gives the client certificate, key and
    the CA of the gateway (mutual TLS); ``server_name`` the name the gateways' certificates are
    checked against (required over TLS with a list; by default the target's host name). A
    plaintext channel needs ``insecure=True`` explicitly (local development only). Raises
    ``ValueError`` for a target or settings that cannot work, before connecting.
    """

    def __init__(
        self,
        target: str | Sequence[str],
        tls: TlsFiles | None = None,
        *,
        insecure: bool = False,
        server_name: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        rng: random.Random | None = None,
    ) -> None:
        if tls is None and not insecure:
            raise ValueError("give tls=TlsFiles(...) or, for local development, insecure=True")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._channel = aio_channel(
            target, None if insecure else tls, server_name=None if insecure else server_name
        )
        self._recognition = pb_grpc.RecognitionServiceStub(self._channel)
        self._timeout = timeout
        self._retry = retry
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._registry: Any = None

    async def __aenter__(self) -> AsyncGatewayClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; calls in flight fail."""
        await self._channel.close()

    # --- plumbing -----------------------------------------------------------------------

    async def _call(
        self,
        method: Callable[..., Any],
        path: str,
        request: Any,
        *,
        timeout: float | None,
        request_id: str,
        idempotent: bool = True,
    ) -> tuple[Any, str]:
        """``(response, server request id)``; retries UNAVAILABLE within the deadline. A request
        over the method's limit (``path``: its full name) is refused before it is sent."""
        check_size(path, request)
        budget = self._timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        attempts = self._retry.attempts if idempotent else 1
        metadata = ((REQUEST_ID_HEADER, request_id),)
        for attempt in range(1, attempts + 1):
            remaining = deadline - loop.time()
            call = method(request, timeout=max(remaining, 0.001), metadata=metadata)
            try:
                response = await call
            except grpc.aio.AioRpcError as exc:
                error = error_from_grpc(exc)
                pause = self._retry.backoff(attempt, self._rng)
                if not error.retryable or attempt == attempts or loop.time() + pause >= deadline:
                    raise error from None
                await asyncio.sleep(pause)
                continue
            trailing = await call.trailing_metadata()
            server_id = next(
                (str(v) for k, v in (trailing or ()) if k == REQUEST_ID_HEADER), request_id
            )
            return response, server_id
        raise AssertionError("unreachable")

    # --- recognition --------------------------------------------------------------------

    async def recognise(
        self,
        code: str,
        *,
        region_hint: str | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Decision:
        """The gateway's decision on one scanned code.

        A code that is not recognised is a normal :class:`Decision` (``reason`` says why).
        Raises :class:`GatewayRpcError` for a malformed request (``REQUEST_TOO_LARGE`` before
        sending it, for a request over 32 KiB), auth failures, or when the
        gateway stays unreachable until the deadline. Retried when UNAVAILABLE (idempotent: the
        same code always yields the same decision and the same converted code).
        """
        rid = request_id or new_request_id()
        request = pb.RecogniseRequest(request_id=rid, code=code, region_hint=region_hint or "")
        response, server_id = await self._call(
            self._recognition.Recognise,
            _RECOGNITION + "Recognise",
            request,
            timeout=timeout,
            request_id=rid,
        )
        return decision_from_proto(response, server_id)

    async def recognise_many(
        self, codes: Iterable[str], *, timeout: float | None = None
    ) -> list[Decision]:
        """Decisions on many codes over one bidirectional stream, in the order given.

        The deadline covers the whole batch. When the gateway becomes UNAVAILABLE part-way, the
        codes not yet answered are sent again on a new stream (with backoff); answered ones are
        kept. A request over the method's limit is not sent: its decision, in its place, has the
        reason the gateway would give in the stream (``REQUEST_TOO_LARGE``).
        """
        items = [(new_request_id(), code) for code in codes]
        budget = self._timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        answers: dict[str, Decision] = {}
        for rid, code in items:
            try:
                check_size(
                    _RECOGNITION + "RecogniseStream", pb.RecogniseRequest(request_id=rid, code=code)
                )
            except GatewayRpcError as exc:
                answers[rid] = _refused(rid, exc)
        stream_id = new_request_id()
        for attempt in range(1, self._retry.attempts + 1):
            pending = [(rid, code) for rid, code in items if rid not in answers]
            if not pending:
                break
            call = self._recognition.RecogniseStream(
                (pb.RecogniseRequest(request_id=rid, code=code) for rid, code in pending),
                timeout=max(deadline - loop.time(), 0.001),
                metadata=((REQUEST_ID_HEADER, stream_id),),
            )
            received: list[pb.RecogniseResponse] = []
            try:
                async for response in call:
                    received.append(response)
                trailing = await call.trailing_metadata()
            except grpc.aio.AioRpcError as exc:
                error = error_from_grpc(exc)
                _answered(answers, pending, received, error.request_id)
                pause = self._retry.backoff(attempt, self._rng)
                if (
                    not error.retryable
                    or attempt == self._retry.attempts
                    or loop.time() + pause >= deadline
                ):
                    raise error from None
                await asyncio.sleep(pause)
                continue
            server_id = next(
                (str(v) for k, v in (trailing or ()) if k == REQUEST_ID_HEADER), stream_id
            )
            _answered(answers, pending, received, server_id)
        return [answers[rid] for rid, _ in items]

    async def gateway_keys(self, *, timeout: float | None = None) -> tokens.GatewayTrust:
        """The gateway's public keys, ready for :func:`gateway.tokens.verify_attestation` and
        :func:`gateway.tokens.verify_home_code`."""
        response, _ = await self._call(
            self._recognition.GetGatewayKeys,
            _RECOGNITION + "GetGatewayKeys",
            pb.GetGatewayKeysRequest(),
            timeout=timeout,
            request_id=new_request_id(),
        )
        return trust_from_proto(response)

    # --- trust registry (gateway/api/v1/registry.proto, docs/trust-registry.md) ----------

    def _registry_stubs(self) -> tuple[Any, Any, Any]:
        if self._registry is None:
            from gateway.api.v1 import registry_pb2 as rpb
            from gateway.api.v1 import registry_pb2_grpc as rpb_grpc

            self._registry = (
                rpb,
                rpb_grpc.PartnerServiceStub(self._channel),
                rpb_grpc.TrustListServiceStub(self._channel),
            )
        return self._registry  # type: ignore[no-any-return]

    async def _submit(
        self, rpc: str, submission: bytes, timeout: float | None
    ) -> SubmissionReceipt:
        rpb, partner, _ = self._registry_stubs()
        response, server_id = await self._call(
            getattr(partner, rpc),
            _PARTNER + rpc,
            rpb.SubmissionRequest(submission=submission),
            timeout=timeout,
            request_id=new_request_id(),
        )
        return receipt_from_proto(response, server_id)

    async def publish_key_set(
        self, submission: bytes, *, timeout: float | None = None
    ) -> SubmissionReceipt:
        """Apply a signed key set (the envelope's exact bytes). Idempotent: a retry of an
        accepted submission returns the first receipt with ``duplicate=True``."""
        return await self._submit("PublishKeySet", submission, timeout)

    async def revoke_key(
        self, submission: bytes, *, timeout: float | None = None
    ) -> SubmissionReceipt:
        """Revoke one of the partner's keys from a compromise time (signed statement bytes)."""
        return await self._submit("RevokeKey", submission, timeout)

    async def publish_revocations(
        self, submission: bytes, *, timeout: float | None = None
    ) -> SubmissionReceipt:
        """Revoke codes and holders of the partner's region (a signed batch's bytes)."""
        return await self._submit("PublishRevocations", submission, timeout)

    async def code_status(
        self,
        code: str = "",
        *,
        code_id: str = "",
        nonce: str | None = None,
        timeout: float | None = None,
    ) -> CodeStatusAnswer:
        """Ask the status of a home-province code (``SD1:`` text, or its ``code_id``) with a
        partner certificate: the gateway's signed status document, to check with
        :meth:`CodeStatusAnswer.verify` (docs/verifying.md, "Status documents"). ``nonce``:
        a fresh one (:func:`gateway.sdk.status.new_nonce`) unless given."""
        rpb, partner, _ = self._registry_stubs()
        asked = new_nonce() if nonce is None else nonce
        response, server_id = await self._call(
            partner.GetCodeStatus,
            _PARTNER + "GetCodeStatus",
            rpb.GetCodeStatusRequest(code=code, code_id=code_id, nonce=asked),
            timeout=timeout,
            request_id=new_request_id(),
        )
        return CodeStatusAnswer(response.status_document, asked, server_id)

    async def trust_list(
        self, since_version: int = 0, *, timeout: float | None = None
    ) -> SignedTrustList:
        """The current signed trust list: a delta since ``since_version`` when possible."""
        rpb, _, trustlist = self._registry_stubs()
        response, server_id = await self._call(
            trustlist.GetTrustList,
            _TRUSTLIST + "GetTrustList",
            rpb.GetTrustListRequest(since_version=since_version),
            timeout=timeout,
            request_id=new_request_id(),
        )
        return trust_list_from_proto(response, server_id)


def _refused(request_id: str, error: GatewayRpcError) -> Decision:
    """The decision in place of a request the client did not send (as the stream answers it)."""
    return Decision(
        request_id=request_id,
        recognised=False,
        reason=error.reason,
        message=error.message,
        region=None,
        mode=None,
        colour=None,
        valid_until=None,
        attestation=None,
        converted=None,
        server_request_id="",
    )


def _answered(
    answers: dict[str, Decision],
    pending: Sequence[tuple[str, str]],
    received: Sequence[pb.RecogniseResponse],
    server_id: str,
) -> None:
    """Record a stream's answers: in the order the requests were sent (a request the gateway
    could not read is answered in its place with an empty ``request_id``)."""
    for (rid, _), response in zip(pending, received, strict=False):
        decision = decision_from_proto(response, server_id)
        answers[rid] = (
            decision if decision.request_id else dataclasses.replace(decision, request_id=rid)
        )


# --- the blocking client ----------------------------------------------------------------------


class GatewayClient:
    """The blocking client: the same calls as :class:`AsyncGatewayClient`, on a private event
    loop. Not for use from inside a running event loop (use the async client there)."""

    def __init__(
        self,
        target: str | Sequence[str],
        tls: TlsFiles | None = None,
        *,
        insecure: bool = False,
        server_name: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._client = self._loop.run_until_complete(
                _make(
                    target,
                    tls,
                    insecure=insecure,
                    server_name=server_name,
                    timeout=timeout,
                    retry=retry,
                )
            )
        except BaseException:
            self._loop.close()
            raise

    def _run(self, call: Awaitable[T]) -> T:
        return self._loop.run_until_complete(call)

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel and the client's event loop."""
        if not self._loop.is_closed():
            self._run(self._client.close())
            self._loop.close()

    def recognise(
        self,
        code: str,
        *,
        region_hint: str | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Decision:
        """See :meth:`AsyncGatewayClient.recognise`."""
        return self._run(
            self._client.recognise(
                code, region_hint=region_hint, request_id=request_id, timeout=timeout
            )
        )

    def recognise_many(
        self, codes: Iterable[str], *, timeout: float | None = None
    ) -> list[Decision]:
        """See :meth:`AsyncGatewayClient.recognise_many`."""
        return self._run(self._client.recognise_many(codes, timeout=timeout))

    def gateway_keys(self, *, timeout: float | None = None) -> tokens.GatewayTrust:
        """See :meth:`AsyncGatewayClient.gateway_keys`."""
        return self._run(self._client.gateway_keys(timeout=timeout))

    def publish_key_set(
        self, submission: bytes, *, timeout: float | None = None
    ) -> SubmissionReceipt:
        """Blocking :meth:`AsyncGatewayClient.publish_key_set`; raises :class:`GatewayRpcError`."""
        return self._run(self._client.publish_key_set(submission, timeout=timeout))

    def revoke_key(self, submission: bytes, *, timeout: float | None = None) -> SubmissionReceipt:
        """Blocking :meth:`AsyncGatewayClient.revoke_key`; raises :class:`GatewayRpcError`."""
        return self._run(self._client.revoke_key(submission, timeout=timeout))

    def publish_revocations(
        self, submission: bytes, *, timeout: float | None = None
    ) -> SubmissionReceipt:
        """Blocking :meth:`AsyncGatewayClient.publish_revocations`; raises
        :class:`GatewayRpcError`."""
        return self._run(self._client.publish_revocations(submission, timeout=timeout))

    def code_status(
        self,
        code: str = "",
        *,
        code_id: str = "",
        nonce: str | None = None,
        timeout: float | None = None,
    ) -> CodeStatusAnswer:
        """Blocking :meth:`AsyncGatewayClient.code_status`; raises :class:`GatewayRpcError`."""
        return self._run(
            self._client.code_status(code, code_id=code_id, nonce=nonce, timeout=timeout)
        )

    def trust_list(
        self, since_version: int = 0, *, timeout: float | None = None
    ) -> SignedTrustList:
        """Blocking :meth:`AsyncGatewayClient.trust_list`; raises :class:`GatewayRpcError`."""
        return self._run(self._client.trust_list(since_version, timeout=timeout))


async def _make(
    target: str | Sequence[str], tls: TlsFiles | None, **kwargs: Any
) -> AsyncGatewayClient:
    return AsyncGatewayClient(target, tls, **kwargs)  # the channel binds to the running loop


__all__: Sequence[str] = (
    "AsyncGatewayClient",
    "ConvertedCode",
    "Decision",
    "GatewayClient",
    "GatewayRpcError",
    "RetryPolicy",
    "SignedTrustList",
    "SubmissionReceipt",
)
