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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from adapters.base import MAX_CODE_CHARS, Colour, Pseudonymise, VerifiedCode
from adapters.regions import detect
from gateway import tokens
from keys.crypto import PrivateKey
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
from keys.keystore import GatewayKeyInfo, KeyRole
from keys.model import ConversionRecord, Mode
from keys.registry import RegistrySnapshot
from keys.store import Store
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
class ConvertedCode:
    code: str
    kid: str
    code_id: str
    expires_at: datetime


@dataclass(frozen=True)
class Decision:
    recognised: bool
    reason: str
    message: str
    region: str = ""
    mode: Mode | None = None
    colour: Colour | None = None
    attestation: tokens.Attestation | None = None
    converted: ConvertedCode | None = None
    valid_until: datetime | None = None
    kid: str = ""  # the partner key that verified the code, for logs and metrics

    @classmethod
    def refused(cls, error: GatewayError, **fields: object) -> Decision:
        region = fields.pop("region", None) or error.metadata.get("region", "")
        return cls(False, error.reason, error.message, region=str(region), **fields)  # type: ignore[arg-type]


class Signers(Protocol):
    def signer(self, role: KeyRole, now: datetime) -> tuple[GatewayKeyInfo, PrivateKey]: ...


class Conversions:
    """Converted codes: an in-memory cache in front of the store, written by group commit.

    Converting the same source code twice returns the same record: from the cache, else from
    the store, else a new record that is committed (batched with concurrent ones) before it is
    returned. Concurrent requests for the same source share one pending creation.
    """

    def __init__(self, store: Store, *, cache_size: int = 100_000, max_batch: int = 256) -> None:
        self._store = store
        self._cache: OrderedDict[tuple[str, str], ConversionRecord] = OrderedDict()
        self._cache_size = cache_size
        self._pending: dict[tuple[str, str], asyncio.Future[ConversionRecord]] = {}
        self._queue: list[tuple[ConversionRecord, asyncio.Future[None]]] = []
        self._max_batch = max_batch
        self._flusher: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()

    def start(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name="conversion-writer")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
            self._flusher = None
        await self._flush()

    async def get_or_create(
        self, region: str, source_code_id: str, make: Callable[[], ConversionRecord]
    ) -> ConversionRecord:
        key = (region, source_code_id)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ConversionRecord] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            record = await self._store.get_conversion(region, source_code_id)
            if record is None:
                record = make()
                await self._commit(record)
            self._remember(key, record)
            future.set_result(record)
            return record
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters, if any, get it through shield
            raise
        finally:
            del self._pending[key]

    def _remember(self, key: tuple[str, str], record: ConversionRecord) -> None:
        self._cache[key] = record
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _commit(self, record: ConversionRecord) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((record, done))
        if self._flusher is None:
            await self._flush()
        else:
            self._wakeup.set()
        await done

    async def _flush_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self._flush()

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            try:
                await self._store.put_conversions([record for record, _ in batch])
            except Exception as exc:  # the store's error reaches every waiting request
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)


class Recogniser:
    """Decides on scanned codes. One instance serves every request of a process."""

    def __init__(
        self,
        snapshot: Callable[[], RegistrySnapshot],
        signers: Signers,
        pseudonymise: Pseudonymise,
        conversions: Conversions,
    ) -> None:
        self._snapshot = snapshot
        self._signers = signers
        self._pseudonymise = pseudonymise
        self._conversions = conversions

    async def recognise(self, code: str, now: datetime, region_hint: str = "") -> Decision:
        """Decide on one code at time ``now``. Never raises for bad input."""
        try:
            verified, decision = self._check(code, now, region_hint)
        except ForeignDataError as exc:
            region = self._snapshot().region(exc.metadata.get("region", ""))
            return Decision.refused(exc, mode=region.mode if region is not None else None)
        if decision is not None:
            return decision
        assert verified is not None
        return await self._recognised(verified, now)

    def _check(
        self, code: str, now: datetime, region_hint: str
    ) -> tuple[VerifiedCode | None, Decision | None]:
        text = code.strip()
        if not text:
            raise MalformedError("the code is empty")
        if len(text) > MAX_CODE_CHARS:
            raise OversizedError(f"the code is longer than {MAX_CODE_CHARS} characters")
        adapter = detect(text)
        if region_hint and region_hint != adapter.region:
            return None, Decision(
                False,
                REGION_MISMATCH,
                f"the code is from region {adapter.region}, not {region_hint[:8]}",
                region=adapter.region,
            )
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
        verified = adapter.decode(text, snapshot, self._pseudonymise)
        status = verified.status
        # From here on the fields are trusted: the signature verified with a key of the region.
        if status.issued_at > now + CLOCK_SKEW:
            raise CodeNotYetValidError(
                f"the code is issued in the future ({status.issued_at.isoformat()})",
                region=region.code,
            )
        if now > status.expires_at:
            raise CodeExpiredError(
                f"the code expired at {status.expires_at.isoformat()}", region=region.code
            )
        if now - status.issued_at > region.max_age:
            raise CodeTooOldError(
                f"the code was issued more than {region.max_age} ago", region=region.code
            )
        if status.colour is not Colour.GREEN:
            return None, Decision(
                False,
                NOT_GREEN,
                f"the code is {status.colour.value}: only green is recognised",
                region=region.code,
                mode=region.mode,
                colour=status.colour,
                kid=verified.key.kid,
            )
        return verified, None

    async def _recognised(self, verified: VerifiedCode, now: datetime) -> Decision:
        status = verified.status
        snapshot = self._snapshot()
        region = snapshot.region(status.region)
        mode = region.mode if region is not None else verified.spec.mode
        valid_until = min(status.expires_at, now + ATTESTATION_TTL)
        converted: ConvertedCode | None = None
        claims: dict[str, object] = {
            "region": status.region,
            "mode": mode.value,
            "holder": status.holder,
            "colour": status.colour.value,
            "code_id": status.code_id,
            "code_kid": status.kid,
            "code_iat": to_unix(status.issued_at),
            "code_exp": to_unix(status.expires_at),
            "iat": to_unix(now),
            "exp": to_unix(valid_until),
        }
        if mode is Mode.CONVERT:
            record = await self._conversions.get_or_create(
                status.region, status.code_id, lambda: self._convert(verified, now)
            )
            converted = ConvertedCode(
                record.converted_code,
                tokens.home_code_kid(record.converted_code),
                record.converted_code_id,
                record.expires_at,
            )
            claims["converted_code_id"] = record.converted_code_id
        info, key = self._signers.signer(KeyRole.ATTEST, now)
        attestation = tokens.sign_attestation(claims, info.kid, key)
        return Decision(
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
        )

    def _convert(self, verified: VerifiedCode, now: datetime) -> ConversionRecord:
        """Issue the home-province code for a verified green partner code.

        Its validity is the source code's own window, never longer, so that converting the
        same source again (even on another replica with the same key) yields the same bytes.
        """
        status = verified.status
        info, key = self._signers.signer(KeyRole.ISSUE, now)
        code_id = tokens.home_code_id(status.region, status.code_id)
        expires_at = min(status.expires_at, info.not_after)
        code = tokens.sign_home_code(
            {
                "id": code_id,
                "holder": status.holder,
                "colour": status.colour.value,
                "iat": to_unix(status.issued_at),
                "exp": to_unix(expires_at),
                "src": {"region": status.region, "code_id": status.code_id},
            },
            info.kid,
            key,
        )
        return ConversionRecord(
            region=status.region,
            source_code_id=status.code_id,
            holder=status.holder,
            converted_code_id=code_id,
            converted_code=code,
            issued_at=status.issued_at,
            expires_at=expires_at,
            created_at=now,
        )
