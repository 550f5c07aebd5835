"""The gateway's own status call (``GetCodeStatus``): partners ask about the home province's
codes (``SD1:``) as the gateway asks them about theirs (docs/partners.md, "Mutual").

The answer is the status document of :mod:`keys.statusdoc` for region 370000, issuer
:data:`ISSUER`, signed with the gateway's current **attest** key (Ed25519, or SM2 in a
deployment that signs with SM2). It is read from the store at every call (no cache): a
revocation of the code's source, or the withdrawal of the key that issued it, shows at once.
A code the gateway never issued is ``unknown``, and that document says nothing else. Nothing
here imports gRPC.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from gateway.claims import HomeCodeClaims
from gateway.tokens import HOME_CODE_PREFIX, MAX_JSON_DEPTH, MAX_TOKEN_BYTES, GatewayTrust
from keys.crypto import b64url_decode
from keys.errors import (
    GatewayError,
    InvalidRequestError,
    KeyRevokedError,
    MalformedError,
    OversizedError,
    RateLimitedError,
)
from keys.jsonutil import loads_strict
from keys.keyset import GatewayKeyInfo, KeyRole, Signers
from keys.model import HOME_REGION, IssuedHomeCode
from keys.statusdoc import (
    EXPIRED,
    GATEWAY_ISSUER,
    MAX_AGE_LIMIT,
    REVOKED,
    UNKNOWN,
    VALID,
    StatusClaims,
    check_code_id,
    check_nonce,
    sign_status,
)
from keys.store import HomeCodeStore
from keys.timeutil import ensure_utc, from_unix

ISSUER = GATEWAY_ISSUER  # the issuer id of the gateway's own documents
# How long a partner may keep a "valid" answer (never past the code's validity nor a
# revocation already scheduled); "revoked" and "expired" are final: MAX_AGE_LIMIT.
VALID_MAX_AGE = 60
# Per partner region: calls per second, and the burst above that rate (docs/api.md, "Limits").
DEFAULT_RATE = 50.0
DEFAULT_BURST = 100


class Holders(Protocol):
    """Makes the holder reference of a status document (``Pseudonymiser.holder_ref``)."""

    def holder_ref(self, audience: str, pseudonym: str) -> str:
        """The reference ``audience`` gets for the holder ``pseudonym``."""
        ...


class RateLimiter:
    """A token bucket per caller: ``rate`` calls a second, bursts of ``burst``.

    ``clock`` (monotonic seconds) is injected so that tests pass time instead of waiting. Keys
    are partner regions (a few dozen at most); the table is bounded all the same.
    """

    MAX_KEYS = 1024

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit allows a positive rate and a burst of at least 1")
        self.rate, self.burst, self._clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> None:
        """Spend one call of ``key``'s allowance; raises :class:`RateLimitedError` when none is
        left (with the seconds until one is, in the error's ``retry_after`` metadata)."""
        now = self._clock()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
            raise RateLimitedError(
                f"more than {self.rate:g} status calls a second: retry in {wait:.2f} s",
                retry_after=f"{wait:.3f}",
            )
        if key not in self._buckets and len(self._buckets) >= self.MAX_KEYS:
            self._buckets.clear()
        self._buckets[key] = (tokens - 1.0, now)


def claimed_code_id(code: str) -> str:
    """The code id an ``SD1:`` text names in its payload (not trusted: a lookup key only; the
    stored code must then be this exact text).

    Raises :class:`OversizedError` (above 4096 characters) or :class:`MalformedError` (not an
    ``SD1:`` code, or no valid ``id`` in its payload).
    """
    if len(code) > MAX_TOKEN_BYTES:
        raise OversizedError(f"a home code is at most {MAX_TOKEN_BYTES} characters")
    if not code.startswith(HOME_CODE_PREFIX):
        raise MalformedError(f"a home-province code starts with {HOME_CODE_PREFIX}")
    body, sep, signature = code[len(HOME_CODE_PREFIX) :].partition(".")
    if not sep or not signature or "." in signature:
        raise MalformedError("a home-province code has two dot-separated parts")
    obj = loads_strict(
        b64url_decode(body, limit=MAX_TOKEN_BYTES),
        max_bytes=MAX_TOKEN_BYTES,
        max_depth=MAX_JSON_DEPTH,
        what="home code payload",
    )
    code_id = obj.get("id") if isinstance(obj, dict) else None
    if not isinstance(code_id, str):
        raise MalformedError("the home code's payload names no code id")
    return check_code_id(code_id)


class CodeStatus:
    """Answers ``GetCodeStatus``: one instance per process, over the store and the gateway's
    keys (``published``: the keys the trust list publishes now, for a withdrawn issuing key)."""

    def __init__(
        self,
        store: HomeCodeStore,
        signers: Signers,
        published: Callable[[], list[GatewayKeyInfo]],
        holders: Holders,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._store = store
        self._signers = signers
        self._published = published
        self._holders = holders
        self.limiter = limiter or RateLimiter(DEFAULT_RATE, DEFAULT_BURST)

    async def answer(
        self, *, code: str, code_id: str, nonce: str, asker: str, now: datetime
    ) -> str:
        """The signed status document for the code given as text (``code``) or by id, asked by
        ``asker`` (the partner region; "" on a plaintext development server) at ``now``.

        Raises :class:`InvalidRequestError` (neither or both of code and code id),
        :class:`MalformedError` / :class:`OversizedError` (a bad code, code id or nonce),
        :class:`RateLimitedError`; :class:`keys.errors.StoreUnavailableError` from the store.
        """
        now = ensure_utc(now).replace(microsecond=0)
        code = code.strip()
        if bool(code) == bool(code_id):
            raise InvalidRequestError("give exactly one of code and code_id")
        asked = claimed_code_id(code) if code else check_code_id(code_id)
        check_nonce(nonce)
        self.limiter.take(asker)
        record = await self._store.home_code(asked)
        if record is not None and code and not hmac.compare_digest(record.code, code):
            record = None  # a text the gateway did not issue under that id
        claims = (
            self._unknown(asked, nonce, now)
            if record is None
            else self._known(record, asker, nonce, now)
        )
        info, key = self._signers.signer(KeyRole.ATTEST, now)
        # The answer holds no longer than the key that signs it (docs/verifying.md, "When a
        # signed output is valid"): a verifier then checks it with the published keys alone.
        room = int((info.not_after - now).total_seconds()) - 1
        if claims.max_age > room:
            claims = replace(claims, max_age=max(0, room))
        return sign_status(claims, info.kid, key)

    def _unknown(self, code_id: str, nonce: str, now: datetime) -> StatusClaims:
        return StatusClaims(HOME_REGION, ISSUER, code_id, nonce, UNKNOWN, now, 0)

    def _known(self, record: IssuedHomeCode, asker: str, nonce: str, now: datetime) -> StatusClaims:
        # The stored code is the gateway's own signed text: its payload states colour and window.
        body = record.code[len(HOME_CODE_PREFIX) :].partition(".")[0]
        home = HomeCodeClaims.from_json(
            loads_strict(
                b64url_decode(body, limit=MAX_TOKEN_BYTES),
                max_bytes=MAX_TOKEN_BYTES,
                max_depth=MAX_JSON_DEPTH,
                what="home code payload",
            )
        )
        valid_from, valid_until = from_unix(home.iat), from_unix(home.exp)
        status, max_age = VALID, VALID_MAX_AGE
        if self._issuer_withdrawn(home, valid_from, valid_until, now) or (
            record.revoked_at is not None and record.revoked_at <= now
        ):
            status, max_age = REVOKED, MAX_AGE_LIMIT
        elif now > valid_until:
            status, max_age = EXPIRED, MAX_AGE_LIMIT
        else:
            ends = [valid_until] + ([record.revoked_at] if record.revoked_at else [])
            left = int((min(ends) - now).total_seconds())
            max_age = max(0, min(max_age, left))
        return StatusClaims(
            HOME_REGION,
            ISSUER,
            record.code_id,
            nonce,
            status,
            now,
            max_age,
            colour=record.colour or home.colour,
            holder_ref=self._holders.holder_ref(asker, record.holder),
            valid_from=valid_from,
            valid_until=valid_until,
        )

    def _issuer_withdrawn(
        self, home: HomeCodeClaims, iat: datetime, exp: datetime, now: datetime
    ) -> bool:
        """Whether the gateway key that issued the code is withdrawn from before ``iat``."""
        trust = GatewayTrust.from_key_infos(self._published(), now=now)
        try:
            trust.find(home.kid, KeyRole.ISSUE.value).check_signed(iat, exp)
        except KeyRevokedError:
            return True
        except GatewayError:  # unknown (long expired and dropped) or outside its window
            return False
        return False


__all__ = [
    "DEFAULT_BURST",
    "DEFAULT_RATE",
    "ISSUER",
    "VALID_MAX_AGE",
    "CodeStatus",
    "RateLimiter",
    "claimed_code_id",
]
