"""The decision: detect, decode, verify, check, attest, convert.

A decision is data, not an exception: "not recognised because the code expired" is a normal
answer with a stable reason. The hot path reads only in-memory state (the registry snapshot and
the gateway's keys); the database is touched only to record a new conversion, through a group
commit so that the record is durable before the converted code is handed out.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from adapters.base import MAX_CODE_CHARS, Colour, Pseudonymise, RegionAdapter, VerifiedCode
from adapters.online import OnlineToken, is_online_token, parse_token, refusal, to_verified
from adapters.regions import detect
from gateway import tokens
from gateway.claims import AttestationClaims, HomeCodeClaims, PartnerSource
from gateway.online.client import Answer, OnlineStatus
from gateway.runtime.tasks import Background
from keys.errors import (
    CodeExpiredError,
    CodeNotYetValidError,
    CodeTooOldError,
    ForeignDataError,
    GatewayError,
    MalformedError,
    OversizedError,
    RegionDisabledError,
    RegionUnknownError,
)
from keys.keystore import KeyRole, Signers
from keys.model import ConversionRecord, Mode, Region
from keys.pseudonym import Pseudonymiser
from keys.registry import RegistrySnapshot
from keys.store import ConversionStore
from keys.timeutil import to_unix

log = logging.getLogger("trustgw.engine")

RECOGNISED = "RECOGNISED"
NOT_GREEN = "NOT_GREEN"
REGION_MISMATCH = "REGION_MISMATCH"

# Clock skew tolerated between a partner's issuer and the gateway.
CLOCK_SKEW = timedelta(minutes=5)
# An attestation is a decision at one moment; it never outlives the code, nor this.
ATTESTATION_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class HomeCode:
    """The home-province code issued for a partner code, as the engine hands it out (the
    client's view of it is :class:`gateway.sdk.ConvertedCode`)."""

    code: str
    kid: str
    code_id: str
    expires_at: datetime


@dataclass(frozen=True)
class Recognition:
    """The engine's decision on one code, with what the recognition log and the metrics need
    (the client's view of it is :class:`gateway.sdk.Decision`, the wire's ``pb.Decision``)."""

    recognised: bool
    reason: str
    message: str
    region: str = ""
    mode: Mode | None = None
    colour: Colour | None = None
    attestation: tokens.Attestation | None = None
    converted: HomeCode | None = None
    valid_until: datetime | None = None
    kid: str = ""  # the partner key that verified the code, for logs and metrics
    holder: str = ""  # keyed pseudonym, once the code verified (recognition log)
    code_id: str = ""  # the partner's code id, once the code verified (recognition log)

    @classmethod
    def refused(cls, error: GatewayError, **fields: object) -> Recognition:
        region = fields.pop("region", None) or error.metadata.get("region", "")
        return cls(False, error.reason, error.message, region=str(region), **fields)  # type: ignore[arg-type]


class PendingRecognition:
    """A green code's decision that waits only for its new conversion's commit: decided,
    signed and converted, to be attested once the converted code is durable.

    Await it (``await pending``), or, once :attr:`done`, take :meth:`result` without waiting.
    Waiting never cancels the commit (other requests for the same source share it). An online
    code's decision is one too: its future is the lookup's task, already decided when done."""

    __slots__ = ("_finish", "_future")

    def __init__(
        self,
        future: asyncio.Future[HomeCode] | asyncio.Future[Recognition],
        finish: Callable[[Any], Recognition],
    ) -> None:
        self._future: asyncio.Future[Any] = future
        self._finish = finish

    @property
    def done(self) -> bool:
        """True once the commit has ended (stored, or failed: :meth:`result` raises)."""
        return self._future.done()

    def result(self) -> Recognition:
        """The decision, once :attr:`done`; raises the store's error if the commit failed."""
        return self._finish(self._future.result())

    async def wait(self) -> Recognition:
        """The decision, after the commit."""
        future = self._future
        if not future.done():
            await asyncio.shield(future)
        return self._finish(future.result())

    def __await__(self) -> Generator[Any, None, Recognition]:
        return self.wait().__await__()


def _decided(recognition: Recognition) -> Recognition:
    """The finish of an online lookup's pending decision: the lookup decided already."""
    return recognition


class Conversions:
    """Converted codes: an in-memory cache in front of the store, written by group commit.

    Converting the same source code twice returns the same record: from the cache, else the
    one the store already holds, else the new one. A cache miss costs no separate read: new
    records are *claimed* in batches (one transaction stores the missing ones and returns what
    is stored for each), and a record is handed out only once it is durable. Concurrent
    requests for the same source share one pending claim.
    """

    def __init__(
        self,
        store: ConversionStore,
        *,
        cache_size: int = 100_000,
        max_batch: int = 256,
        gather_seconds: float = 0.01,
    ) -> None:
        self._store = store
        # How long the writer gathers new records after the first one before it commits: one
        # hop to the store's thread and one transaction per gathering instead of per record
        # (bench/PROFILE.md: waking the writer thread was ~6 % of the server's CPU under new
        # codes). A new conversion waits that much longer for its reply; repeats do not.
        self._gather = gather_seconds
        self._cache: OrderedDict[tuple[str, str], HomeCode] = OrderedDict()
        self._cache_size = cache_size
        self._pending: dict[tuple[str, str], asyncio.Future[HomeCode]] = {}
        # (region, source code id) in memory only: the store knows the source by its code key.
        # Each with the kid that signed the new home code (known here: not parsed back).
        self._queue: list[
            tuple[tuple[str, str], ConversionRecord, str, asyncio.Future[HomeCode]]
        ] = []
        self._max_batch = max_batch
        self._flusher = Background("conversion-writer")
        self._wakeup = asyncio.Event()
        self._flushes: set[asyncio.Future[None]] = set()  # commits while the writer is stopped

    def start(self) -> None:
        self._flusher.start(self._flush_loop)

    async def stop(self) -> None:
        await self._flusher.stop()
        await self._flush()
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)

    def cached(self, region: str, source_code_id: str) -> HomeCode | None:
        """The converted code for this source code if this process holds it (no I/O)."""
        key = (region, source_code_id)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
        return hit

    def claim(
        self,
        region: str,
        source_code_id: str,
        make: Callable[[], tuple[ConversionRecord, str]],
    ) -> HomeCode | asyncio.Future[HomeCode]:
        """The converted code if this process holds it, else the future of its commit (shared
        by every request for the same source: await it through ``asyncio.shield``). No await:
        a decision that converts is decided up to the commit without leaving the caller.
        ``make``: the new record and the kid of the key that signed its home code."""
        key = (region, source_code_id)
        hit = self.cached(region, source_code_id)
        if hit is not None:
            return hit
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._pending[key] = pending
            record, kid = make()
            self._queue.append((key, record, kid, pending))
            if not self._flusher.running:  # stopped (or never started): commit right away
                flush = asyncio.ensure_future(self._flush())
                self._flushes.add(flush)
                flush.add_done_callback(self._flushes.discard)
            else:
                self._wakeup.set()
        return pending

    def _remember(
        self, key: tuple[str, str], record: ConversionRecord, kid: str | None = None
    ) -> HomeCode:
        """Cache the stored record in the form a decision hands out, built once. ``kid``: the
        key that signed its home code when this process signed it (else read from the code)."""
        converted = HomeCode(
            record.converted_code,
            kid if kid is not None else tokens.home_code_kid(record.converted_code),
            record.converted_code_id,
            record.expires_at,
        )
        self._cache[key] = converted
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return converted

    async def _flush_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            if self._gather > 0 and len(self._queue) < self._max_batch:
                await asyncio.sleep(self._gather)
            self._wakeup.clear()
            await self._flush()

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            try:
                stored = await self._store.claim_conversions([entry[1] for entry in batch])
            except Exception as exc:  # the store's error reaches every waiting request
                for key, _, _, done in batch:
                    self._pending.pop(key, None)
                    if not done.done():
                        done.set_exception(exc)
                        done.exception()  # retrieved: each waiter gets it through shield
                continue
            for (key, record, kid, done), kept in zip(batch, stored, strict=True):
                # Another request's (or replica's) earlier conversion may be the one kept.
                ours = kept.converted_code == record.converted_code
                converted = self._remember(key, kept, kid if ours else None)
                self._pending.pop(key, None)
                if not done.done():
                    done.set_result(converted)


class Recogniser:
    """Decides on scanned codes. One instance serves every request of a process."""

    def __init__(
        self,
        snapshot: Callable[[], RegistrySnapshot],
        signers: Signers,
        pseudonymiser: Pseudonymiser,
        conversions: Conversions,
        *,
        verified_cache_size: int = 20_000,
        online: OnlineStatus | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._signers = signers
        self._pseudonymise: Pseudonymise = pseudonymiser
        self._code_key = pseudonymiser.code_key  # code ids are stored and matched only keyed
        self._conversions = conversions
        self._verified: OrderedDict[str, VerifiedCode] = OrderedDict()
        self._verified_version = -1
        self._verified_size = verified_cache_size
        self._online = online if online is not None else OnlineStatus({})

    async def recognise(
        self, code: str, now: datetime, region_hint: str = "", budget: float | None = None
    ) -> Recognition:
        """Decide on one code at time ``now``. Never raises for bad input."""
        result = self.start(code, now, region_hint, budget)
        return result if isinstance(result, Recognition) else await result

    def start(
        self, code: str, now: datetime, region_hint: str = "", budget: float | None = None
    ) -> Recognition | PendingRecognition:
        """Decide without waiting where possible.

        Returns the decision, or, when the decision needs I/O (recording a new conversion,
        asking an online code's region), a :class:`PendingRecognition` that completes it. Lets
        a stream keep deciding while a conversion commits. ``budget``: the seconds the caller's
        own call has left (None: no deadline), of which an online lookup takes at most a share.
        """
        try:
            verified, decision, pending = self._check(code, now, region_hint, budget)
        except ForeignDataError as exc:
            return self._refused(exc)
        if pending is not None:
            return pending
        if decision is not None:
            return decision
        assert verified is not None
        return self._recognised(verified, now)

    def _refused(self, exc: ForeignDataError) -> Recognition:
        region = self._snapshot().region(exc.metadata.get("region", ""))
        return Recognition.refused(exc, mode=region.mode if region is not None else None)

    async def _online_decision(
        self, adapter: RegionAdapter, region: Region, token: OnlineToken, now: datetime,
        budget: float | None,
    ) -> Recognition:  # fmt: skip
        """Ask the region for the token's status, then decide as for an offline code."""
        try:
            answer = await self._online.client(region.code).status(token, now, budget)
        except ForeignDataError as exc:
            return self._refused(exc)
        verified, decision = self._online_verified(answer, adapter, region, self._snapshot(), now)
        if decision is not None:
            return decision
        assert verified is not None
        result = self._recognised(verified, now)
        return result if isinstance(result, Recognition) else await result

    def _online_verified(
        self,
        answer: Answer,
        adapter: RegionAdapter,
        region: Region,
        snapshot: RegistrySnapshot,
        now: datetime,
    ) -> tuple[VerifiedCode | None, Recognition | None]:
        """A verified status document as a verified code, or the refusal its status means."""
        document = answer.document
        error = refusal(document, now)
        if error is not None:
            return None, Recognition.refused(
                error,
                region=region.code,
                mode=region.mode,
                colour=None if document.colour is None else Colour(document.colour),
                kid=answer.key.kid,
                holder="" if document.holder_ref is None else self._pseudonymise(
                    region.code, document.holder_ref
                ),
                code_id=document.code_id,
            )  # fmt: skip
        verified = to_verified(document, answer.key, adapter.spec, self._pseudonymise)
        return self._judge(verified, region, snapshot, now)

    def _decode(
        self, adapter: RegionAdapter, text: str, snapshot: RegistrySnapshot
    ) -> VerifiedCode:
        """Decode and verify, remembering codes whose signature already verified.

        The cache is keyed by the exact code text and emptied whenever the registry changes, so
        a key's revocation applies at once; every time-dependent check still runs per request.
        """
        if snapshot.version != self._verified_version:
            self._verified.clear()
            self._verified_version = snapshot.version
        hit = self._verified.get(text)
        if hit is not None:
            self._verified.move_to_end(text)
            return hit
        verified = adapter.decode(text, snapshot, self._pseudonymise)
        self._verified[text] = verified
        if len(self._verified) > self._verified_size:
            self._verified.popitem(last=False)
        return verified

    async def verify(self, code: str, now: datetime) -> tuple[VerifiedCode, bool]:
        """The code checked as :meth:`recognise` checks it, of any colour (for declarations),
        and whether it names its holder by ID number (not an online code, which names them by
        its region's reference). Raises the :class:`ForeignDataError` of ``Recognise``'s reason.
        """
        text = self._text(code)
        adapter = detect(text)
        snapshot, region = self._onboarded(adapter)
        if is_online_token(text, adapter.spec):
            token = parse_token(text, adapter.spec)
            client = self._online.client(region.code)
            answer = client.cached(token, now) or await client.status(token, now, None)
            if (error := refusal(answer.document, now)) is not None:
                raise error
            verified = to_verified(answer.document, answer.key, adapter.spec, self._pseudonymise)
        else:
            verified = self._decode(adapter, text, snapshot)
        self._check_verified(verified, snapshot, region.max_age, now)
        return verified, not is_online_token(text, adapter.spec)

    @staticmethod
    def _text(code: str) -> str:
        """The code without surrounding white space; MALFORMED if empty, OVERSIZED if long."""
        text = code.strip()
        if not text:
            raise MalformedError("the code is empty")
        if len(text) > MAX_CODE_CHARS:
            raise OversizedError(f"the code is longer than {MAX_CODE_CHARS} characters")
        return text

    def _onboarded(self, adapter: RegionAdapter) -> tuple[RegistrySnapshot, Region]:
        """The snapshot and the code's region; REGION_UNKNOWN or REGION_DISABLED otherwise."""
        snapshot = self._snapshot()
        region = snapshot.region(adapter.region)
        if region is None:
            raise RegionUnknownError(
                f"region {adapter.region} is not onboarded", region=adapter.region
            )
        if not region.enabled:
            raise RegionDisabledError(
                f"recognition of region {region.code} ({region.name}) is disabled",
                region=region.code,
            )
        return snapshot, region

    def _check(
        self, code: str, now: datetime, region_hint: str, budget: float | None
    ) -> tuple[VerifiedCode | None, Recognition | None, PendingRecognition | None]:
        text = self._text(code)
        adapter = detect(text)
        if region_hint and region_hint != adapter.region:
            return (
                None,
                Recognition(
                    False,
                    REGION_MISMATCH,
                    f"the code is from region {adapter.region}, not {region_hint[:8]}",
                    region=adapter.region,
                ),
                None,
            )
        snapshot, region = self._onboarded(adapter)
        if is_online_token(text, adapter.spec):
            token = parse_token(text, adapter.spec)
            hit = self._online.client(region.code).cached(token, now)
            if hit is None:
                lookup = asyncio.ensure_future(
                    self._online_decision(adapter, region, token, now, budget)
                )
                return None, None, PendingRecognition(lookup, _decided)
            return *self._online_verified(hit, adapter, region, snapshot, now), None
        return *self._judge(self._decode(adapter, text, snapshot), region, snapshot, now), None

    def _judge(
        self, verified: VerifiedCode, region: Region, snapshot: RegistrySnapshot, now: datetime
    ) -> tuple[VerifiedCode | None, Recognition | None]:
        """The policy on a verified code: revocation, time, colour."""
        status = verified.status
        # From here on the fields are trusted: the signature verified with a key of the region
        # that was valid and not revoked when the code was issued. Every refusal from here on
        # carries the code's colour, mode and region (docs/api.md, "Decisions").
        verified_fields: dict[str, Any] = {
            "region": region.code,
            "mode": region.mode,
            "colour": status.colour,
            "kid": verified.key.kid,
            "holder": status.holder,
            "code_id": status.code_id,
        }
        try:
            self._check_verified(verified, snapshot, region.max_age, now)
        except ForeignDataError as exc:
            return None, Recognition.refused(exc, **verified_fields)
        if status.colour is not Colour.GREEN:
            return None, Recognition(
                False,
                NOT_GREEN,
                f"the code is {status.colour.value}: only green is recognised",
                **verified_fields,
            )
        return verified, None

    def _check_verified(
        self,
        verified: VerifiedCode,
        snapshot: RegistrySnapshot,
        max_age: timedelta,
        now: datetime,
    ) -> None:
        """Revocation, then time: raises CODE_REVOKED, CODE_NOT_YET_VALID, CODE_EXPIRED or
        CODE_TOO_OLD for a code whose signature verified."""
        status = verified.status
        region = status.region
        # Revoked codes and holders (in-memory index, no database access): CODE_REVOKED.
        snapshot.revocations.check(
            region, status.code_id, status.holder, status.issued_at, now, self._code_key
        )
        if status.issued_at > now + CLOCK_SKEW:
            raise CodeNotYetValidError(
                f"the code is issued in the future ({status.issued_at.isoformat()})",
                region=region,
            )
        if now > status.expires_at:
            raise CodeExpiredError(
                f"the code expired at {status.expires_at.isoformat()}", region=region
            )
        if now - status.issued_at > max_age:
            raise CodeTooOldError(f"the code was issued more than {max_age} ago", region=region)

    def _recognised(
        self, verified: VerifiedCode, now: datetime
    ) -> Recognition | PendingRecognition:
        status = verified.status
        region = self._snapshot().region(status.region)
        mode = region.mode if region is not None else verified.spec.mode
        if mode is not Mode.CONVERT:
            return self._attest(verified, mode, now, None)
        claimed = self._conversions.claim(
            status.region, status.code_id, lambda: self._convert(verified, now)
        )
        if isinstance(claimed, HomeCode):
            return self._attest(verified, mode, now, claimed)
        return PendingRecognition(
            claimed, lambda converted: self._attest(verified, mode, now, converted)
        )

    def _attest(
        self, verified: VerifiedCode, mode: Mode, now: datetime, converted: HomeCode | None
    ) -> Recognition:
        status = verified.status
        info, key = self._signers.signer(KeyRole.ATTEST, now)
        claims = AttestationClaims(
            region=status.region,
            mode=mode.value,
            holder=status.holder,
            colour=status.colour.value,
            code_id=status.code_id,
            code_kid=status.kid,
            code_iat=to_unix(status.issued_at),
            code_exp=to_unix(status.expires_at),
            converted_code_id=None if converted is None else converted.code_id,
        )
        # Signed now; never longer than the code, a day, or the signing key's own validity (a
        # retired key leaves the trust list after its not_after): tokens.validity.
        attestation, valid_until = tokens.attest(
            info, key, now, claims, until=min(status.expires_at, now + ATTESTATION_TTL)
        )
        return Recognition(
            True,
            RECOGNISED,
            "green code recognised" + (" and converted" if converted else ""),
            region=status.region,
            mode=mode,
            colour=status.colour,
            attestation=attestation,
            converted=converted,
            valid_until=valid_until,
            kid=verified.key.kid,
            holder=status.holder,
            code_id=status.code_id,
        )

    def _convert(self, verified: VerifiedCode, now: datetime) -> tuple[ConversionRecord, str]:
        """Issue the home-province code for a verified green partner code.

        It is signed now (``iat``: the gateway's signing time, within the issuing key's
        validity) and says when its source was issued (``src_iat``); it never outlives the
        source code (``exp``). Converting the same source again yields this same code because
        the store keeps the first record and every later caller gets that one
        (:meth:`Conversions.claim`), not because signing is repeatable.
        """
        status = verified.status
        info, key = self._signers.signer(KeyRole.ISSUE, now)
        source_key = self._code_key(status.region, status.code_id)
        code_id = tokens.home_code_id(status.region, source_key)
        code, expires_at = tokens.issue_home_code(
            info,
            key,
            now,
            HomeCodeClaims(
                id=code_id,
                holder=status.holder,
                colour=status.colour.value,
                # Not the source's code id: it may be a personal identifier, and the home code
                # is stored (the attestation beside it names the source code).
                src=PartnerSource(status.region),
                src_iat=to_unix(status.issued_at),
            ),
            until=status.expires_at,
        )
        record = ConversionRecord(
            region=status.region,
            source_key=source_key,
            holder=status.holder,
            converted_code_id=code_id,
            converted_code=code,
            issued_at=status.issued_at,
            expires_at=expires_at,
            created_at=now,
        )
        return record, info.kid
