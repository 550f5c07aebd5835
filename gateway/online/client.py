"""Asking a partner region for an online code's status, isolated per partner.

One :class:`PartnerClient` per online region, each with its own connection pool, in-flight
limit, circuit breaker and status cache, so that a slow or failing partner costs its own codes
only (docs/partners.md §9.6, §9.7). Every failure is one of the stable reasons
(``PARTNER_UNAVAILABLE``, ``PARTNER_TIMEOUT``, ``PARTNER_BUSY``, ``PARTNER_ANSWER_INVALID``, or
a verification reason), never an unexpected exception.

The HTTP client is aiohttp (:class:`AiohttpTransport`): asyncio-native like the server, an
actively maintained project with native-code HTTP parsing, its own per-host connection pool,
client certificates through the standard ``ssl`` module, and a streamed body the client reads
chunk by chunk, so the size limit holds while reading.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import aiohttp

from adapters.online import (
    MAX_ANSWER_BYTES,
    STATUS_PATH,
    OnlineToken,
    StatusQuestion,
    cache_until,
    open_answer,
    verify_status_document,
)
from gateway.online.breaker import BreakerState, CircuitBreaker
from gateway.online.config import OnlineSettings, PartnerSettings
from keys.errors import (
    ConfigurationError,
    ForeignDataError,
    PartnerAnswerInvalidError,
    PartnerBusyError,
    PartnerTimeoutError,
    PartnerUnavailableError,
)
from keys.model import KeyLookup, RegionKey
from keys.statusdoc import StatusClaims

log = logging.getLogger("trustgw.online")

# The per-call deadline is at most this share of what the checkpoint's own call has left...
BUDGET_SHARE = 0.5
# ... minus this margin (seconds) for the decision itself.
BUDGET_MARGIN = 0.05
# Below this many seconds a call is not started: it could not be answered in time.
MIN_CALL_SECONDS = 0.01


# Set in a PartnerUnavailableError's metadata when the connection failed or was reset before
# an answer: the one failure that may be retried.
RETRYABLE = "retryable"


class Transport(Protocol):
    """Posts one request body and returns the HTTP status and the body (bounded)."""

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        """Raises :class:`PartnerUnavailableError` (with :data:`RETRYABLE` in its metadata when
        the connection failed before an answer), :class:`PartnerAnswerInvalidError` (too
        large). The caller bounds the time."""
        ...

    async def close(self) -> None:
        """Close the connections."""
        ...


def client_context(settings: OnlineSettings, partner: PartnerSettings) -> ssl.SSLContext:
    """The TLS context for one partner: its CA, the gateway's client certificate, TLS 1.2+.

    Raises :class:`ConfigurationError` for a file that cannot be loaded.
    """
    try:
        context = ssl.create_default_context(
            cafile=str(partner.ca) if partner.ca is not None else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if settings.client_cert is not None and settings.client_key is not None:
            context.load_cert_chain(str(settings.client_cert), str(settings.client_key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"cannot load the TLS files for online region {partner.region}: {exc}"
        ) from None
    return context


class AiohttpTransport:
    """HTTPS with mutual TLS to one partner, its own pool of at most ``limit`` connections."""

    def __init__(self, context: ssl.SSLContext, limit: int) -> None:
        self._context = context
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on the running loop, at the first call
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._context, limit=self._limit),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
        }
        try:
            async with self._open().post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                declared = response.content_length
                if declared is not None and declared > MAX_ANSWER_BYTES:
                    raise PartnerAnswerInvalidError(
                        f"the answer is larger than {MAX_ANSWER_BYTES} bytes"
                    )
                if response.status != 200:
                    return response.status, b""
                received = bytearray()
                async for chunk in response.content.iter_chunked(4096):
                    received += chunk
                    if len(received) > MAX_ANSWER_BYTES:
                        raise PartnerAnswerInvalidError(
                            f"the answer is larger than {MAX_ANSWER_BYTES} bytes"
                        )
                return 200, bytes(received)
        except (aiohttp.ClientSSLError, aiohttp.ClientConnectorCertificateError) as exc:
            raise PartnerUnavailableError(
                f"TLS with the endpoint failed ({type(exc).__name__})"
            ) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionError) as exc:
            raise PartnerUnavailableError(
                f"the connection failed ({type(exc).__name__})", **{RETRYABLE: "yes"}
            ) from None
        except aiohttp.ClientError as exc:  # a malformed HTTP answer, a broken body
            raise PartnerUnavailableError(
                f"the endpoint's HTTP answer is unusable ({type(exc).__name__})"
            ) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(frozen=True)
class Answer:
    """A verified status document, the key that signed it, and until when it may be reused."""

    document: StatusClaims
    key: RegionKey
    cached_until: datetime | None


class PartnerMetrics(Protocol):
    """What the client reports (``gateway.observability.Metrics`` implements it)."""

    def partner_call(self, region: str, outcome: str, seconds: float | None) -> None:
        """One status lookup's outcome (``ok``, ``cached`` or a reason), with the call's time."""
        ...

    def partner_breaker(self, region: str, state: BreakerState) -> None:
        """The breaker's state after a call."""
        ...


class _NoMetrics:
    def partner_call(self, region: str, outcome: str, seconds: float | None) -> None:
        return None

    def partner_breaker(self, region: str, state: BreakerState) -> None:
        return None


class PartnerClient:
    """Status lookups for one online region."""

    def __init__(
        self,
        settings: PartnerSettings,
        transport: Transport,
        keys: Callable[[], KeyLookup],
        *,
        metrics: PartnerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        nonce: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.settings = settings
        self.region = settings.region
        self._transport = transport
        self._keys = keys
        self._metrics = metrics or _NoMetrics()
        self._clock = clock
        self._nonce = nonce
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s)
        self._in_flight = 0
        self._cache: OrderedDict[str, Answer] = OrderedDict()
        self._cache_version: object = None
        self._url = settings.endpoint + STATUS_PATH

    @property
    def in_flight(self) -> int:
        """Calls to the partner in flight now."""
        return self._in_flight

    def cached(self, token: OnlineToken, now: datetime) -> Answer | None:
        """The cached answer for ``token`` if it is still fresh at ``now`` (no I/O).

        The cache is emptied whenever the registry changes (as the engine's cache of verified
        offline codes is), so that a key's revocation applies to cached answers at once.
        """
        version = getattr(self._keys(), "version", None)
        if version != self._cache_version:
            self._cache.clear()
            self._cache_version = version
        hit = self._cache.get(token.code_id)
        if hit is None:
            return None
        if hit.cached_until is None or now >= hit.cached_until:
            del self._cache[token.code_id]
            return None
        self._cache.move_to_end(token.code_id)
        self._metrics.partner_call(self.region, "cached", None)
        return hit

    def _remember(self, code_id: str, answer: Answer) -> None:
        if answer.cached_until is None or self.settings.cache_entries == 0:
            self._cache.pop(code_id, None)
            return
        self._cache[code_id] = answer
        self._cache.move_to_end(code_id)
        while len(self._cache) > self.settings.cache_entries:
            self._cache.popitem(last=False)

    def deadline(self, budget: float | None) -> float:
        """The deadline of one lookup, in seconds: the region's, cut to a share of the
        checkpoint's own remaining ``budget`` (None: no deadline of its own)."""
        deadline = self.settings.deadline
        if budget is not None:
            deadline = min(deadline, budget * BUDGET_SHARE - BUDGET_MARGIN)
        return deadline

    async def status(self, token: OnlineToken, now: datetime, budget: float | None) -> Answer:
        """The verified status of ``token``: from the cache, or asked within the deadline.

        Raises :class:`PartnerUnavailableError`, :class:`PartnerTimeoutError`,
        :class:`PartnerBusyError`, :class:`PartnerAnswerInvalidError` or a verification error
        (:class:`keys.errors.ForeignDataError`); never anything else.
        """
        hit = self.cached(token, now)
        if hit is not None:
            return hit
        started = self._clock()
        deadline = self.deadline(budget)
        try:
            # Busy first: a call refused here must not take the half-open breaker's one probe.
            if self._in_flight >= self.settings.concurrency:
                raise PartnerBusyError(
                    f"already {self._in_flight} calls in flight to region {self.region}",
                    region=self.region,
                )
            if not self.breaker.allow(started):
                wait = self.breaker.retry_in(started)
                raise PartnerUnavailableError(
                    f"region {self.region}'s circuit is open after repeated failures: "
                    f"a probe in {wait:.1f} s",
                    region=self.region,
                )
        except ForeignDataError as exc:
            self._metrics.partner_call(self.region, exc.reason, None)
            raise
        self._in_flight += 1
        try:
            answer = await self._ask(token, now, started, deadline)
        except ForeignDataError as exc:
            exc.metadata.setdefault("region", self.region)
            self.breaker.failed(self._clock())
            self._report(exc.reason, started)
            raise
        except asyncio.CancelledError:  # counted as a failure: a probe must not stay taken
            self.breaker.failed(self._clock())
            raise
        except Exception as exc:  # a bug must not escape as INTERNAL nor leave the count high
            log.exception("online lookup bug for region %s", self.region)
            self.breaker.failed(self._clock())
            self._report("PARTNER_UNAVAILABLE", started)
            raise PartnerUnavailableError(
                f"the lookup failed ({type(exc).__name__})", region=self.region
            ) from None
        finally:
            self._in_flight -= 1
        self.breaker.succeeded()
        self._report("ok", started)
        self._remember(token.code_id, answer)
        return answer

    def _report(self, outcome: str, started: float) -> None:
        end = self._clock()
        self._metrics.partner_call(self.region, outcome, end - started)
        self._metrics.partner_breaker(self.region, self.breaker.state(end))

    async def _ask(
        self, token: OnlineToken, now: datetime, started: float, deadline: float
    ) -> Answer:
        end = started + deadline
        attempts = 2 if self.settings.retry else 1
        for attempt in range(attempts):
            left = end - self._clock()
            if left < MIN_CALL_SECONDS:
                raise PartnerTimeoutError(
                    f"region {self.region} did not answer within {deadline * 1000:.0f} ms",
                    region=self.region,
                )
            asked_at = now + timedelta(seconds=self._clock() - started)
            question = StatusQuestion.ask(token, self._nonce(16), asked_at)
            try:
                async with asyncio.timeout(left):
                    status, body = await self._transport.post(self._url, question.body())
            except TimeoutError:
                raise PartnerTimeoutError(
                    f"region {self.region} did not answer within {deadline * 1000:.0f} ms",
                    region=self.region,
                ) from None
            except PartnerUnavailableError as exc:
                # One retry, only after a connection failure and only if half the deadline is
                # left (docs/partners.md §9.6).
                retryable = exc.metadata.pop(RETRYABLE, "") == "yes"
                if retryable and attempt + 1 < attempts and end - self._clock() >= deadline / 2:
                    log.info("online region %s: %s, retrying once", self.region, exc.message)
                    continue
                raise PartnerUnavailableError(
                    f"region {self.region}'s endpoint failed: {exc.message}", region=self.region
                ) from None
            if status != 200:
                raise PartnerUnavailableError(
                    f"region {self.region}'s endpoint answered HTTP {status}", region=self.region
                )
            received = now + timedelta(seconds=self._clock() - started)
            document, key = verify_status_document(
                open_answer(body), question, self._keys(), received
            )
            return Answer(document, key, cache_until(document, received))
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        await self._transport.close()


class OnlineStatus:
    """Every online region's client; what the engine asks."""

    def __init__(self, clients: dict[str, PartnerClient]) -> None:
        self._clients = clients

    @classmethod
    def build(
        cls,
        settings: OnlineSettings,
        keys: Callable[[], KeyLookup],
        metrics: PartnerMetrics | None = None,
    ) -> OnlineStatus:
        """One client per configured region, each with its own TLS context and pool.

        Raises :class:`ConfigurationError` for TLS files that cannot be loaded.
        """
        clients = {
            region: PartnerClient(
                partner,
                AiohttpTransport(client_context(settings, partner), partner.concurrency),
                keys,
                metrics=metrics,
            )
            for region, partner in settings.partners.items()
        }
        return cls(clients)

    def client(self, region: str) -> PartnerClient:
        """The region's client; raises :class:`PartnerUnavailableError` when it has none."""
        client = self._clients.get(region)
        if client is None:
            raise PartnerUnavailableError(
                f"region {region} is online but the gateway has no endpoint for it (online.file)",
                region=region,
            )
        return client

    @property
    def clients(self) -> dict[str, PartnerClient]:
        """The clients by region."""
        return dict(self._clients)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
