"""The adapter contract: one fixed entry point, decode -> verify -> translate.

A region's adapter is a thin, declarative :class:`RegionSpec`: which envelope (codec) it uses,
which field conventions its claims follow, its recognition mode and its maximum code age. The
shared :class:`RegionAdapter` runs the steps in a fixed order and turns any unexpected exception
from a codec into the project's :class:`MalformedError`, so one bad adapter can never leak a
``KeyError`` as an INTERNAL error.

Order matters for security: the envelope is parsed only as far as needed to find the key-id hint
and the signature; the signature is verified with a key of *that region*; only then are the
claims parsed and trusted.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from keys.crypto import Algorithm, PrivateKey
from keys.errors import (
    AlgorithmUnsupportedError,
    GatewayError,
    KeyUnknownError,
    MalformedError,
    OversizedError,
    SignatureInvalidError,
)
from keys.model import KeyLookup, Mode, RegionKey
from keys.timeutil import ensure_utc

log = logging.getLogger("trustgw.adapters")

# Hard limit on a code's text as scanned, before any decoding.
MAX_CODE_CHARS = 4096
# Limits on each decode step's output.
MAX_DECOMPRESSED_BYTES = 16 * 1024
MAX_JSON_DEPTH = 16
MAX_CBOR_DEPTH = 16
# A code without a key-id hint is tried against at most this many keys of its region.
MAX_CANDIDATE_KEYS = 8

_ISSUER = re.compile(r"[A-Za-z0-9-]{1,32}")

Pseudonymise = Callable[[str, str], str]
"""(region, raw holder identifier) -> keyed pseudonym. Raw identifiers never leave the adapter."""


class Colour(StrEnum):
    """The health-code colour, as the gateway spells it whatever a region writes."""

    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"


@dataclass(frozen=True)
class CanonicalStatus:
    """A partner's code, after verification, in the gateway's own terms."""

    region: str
    holder: str  # keyed pseudonym of the holder, never the raw identifier
    colour: Colour
    issued_at: datetime
    expires_at: datetime
    code_id: str
    kid: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "issued_at", ensure_utc(self.issued_at))
        object.__setattr__(self, "expires_at", ensure_utc(self.expires_at))


@dataclass(frozen=True)
class CodeEnvelope:
    """What a codec extracts from a code *before* anything in it is trusted."""

    kid_hint: str | None
    alg: Algorithm | None  # declared in the envelope's header, when it declares one
    signing_input: bytes
    signature: bytes
    payload: bytes  # the signed payload bytes, untrusted until the signature verifies


class Codec(Protocol):
    """A signature envelope family, with its per-region details bound in."""

    @property
    def algs(self) -> frozenset[Algorithm]:
        """The signature algorithms this codec verifies (any other is ``ALGORITHM_UNSUPPORTED``)."""
        ...

    def open(self, text: str) -> CodeEnvelope:
        """Parse the envelope. Raises :class:`MalformedError` (or a subclass)."""
        ...

    def claims(self, payload: bytes) -> Mapping[Any, Any]:
        """Decode the payload's claims; called only after the signature verified."""
        ...

    def seal(self, claims: Mapping[Any, Any], key: PrivateKey, kid: str) -> str:
        """Build a code (the partner side; used by the simulator)."""
        ...


class FieldConvention(Protocol):
    """How a region spells its claims."""

    def translate(
        self, claims: Mapping[Any, Any], region: str, kid: str, pseudonymise: Pseudonymise
    ) -> CanonicalStatus:
        """Map verified claims to the canonical status. Raises :class:`MalformedError`."""
        ...

    def build(
        self,
        *,
        holder_id: str,
        holder_name: str,
        colour: Colour,
        issued_at: datetime,
        expires_at: datetime,
        code_id: str,
    ) -> dict[Any, Any]:
        """The partner side: the claims a region's issuer writes for these values."""
        ...


@dataclass(frozen=True)
class OnlineSpec:
    """What makes a region an online one (docs/partners.md §9): the issuer ids its tokens may
    name. The region's endpoint and limits are deployment settings (``gateway.online``)."""

    issuers: frozenset[str]

    def __post_init__(self) -> None:
        if not self.issuers or not all(_ISSUER.fullmatch(i) for i in self.issuers):
            raise ValueError("an online region names at least one issuer id [A-Za-z0-9-]{1,32}")


@dataclass(frozen=True)
class RegionSpec:
    """Everything that makes one partner region's adapter differ from another's."""

    code: str
    name: str
    mode: Mode
    prefix: str  # how the gateway recognises the region's codes; unique across regions
    codec: Codec
    fields: FieldConvention
    max_age: timedelta
    signing_alg: Algorithm  # the algorithm the region's issuer uses
    online: OnlineSpec | None = None  # set: the region also has online codes (§9)


@dataclass(frozen=True)
class VerifiedCode:
    """A code whose signature verified, with the key that verified it."""

    status: CanonicalStatus
    key: RegionKey
    spec: RegionSpec


class RegionAdapter:
    """The shared entry point for every region."""

    def __init__(self, spec: RegionSpec) -> None:
        self.spec = spec

    @property
    def region(self) -> str:
        """The region's 6-digit code."""
        return self.spec.code

    @property
    def mode(self) -> Mode:
        """Whether the region's codes are shown (attested) or converted to home codes."""
        return self.spec.mode

    def decode(self, text: str, keys: KeyLookup, pseudonymise: Pseudonymise) -> VerifiedCode:
        """Decode, verify and translate one code of this region.

        Raises a :class:`keys.errors.ForeignDataError` subclass on any failure; never anything
        else. Key validity at issuance is checked here too; expiry, age and colour are the
        caller's policy.
        """
        if len(text) > MAX_CODE_CHARS:
            raise OversizedError(f"the code is longer than {MAX_CODE_CHARS} characters")
        try:
            envelope = self.spec.codec.open(text)
            key = self._verify(envelope, keys)
            claims = self.spec.codec.claims(envelope.payload)
            status = self.spec.fields.translate(claims, self.region, key.kid, pseudonymise)
            key.check_valid_at_issuance(status.issued_at)
        except GatewayError as exc:
            exc.metadata.setdefault("region", self.region)
            raise
        except (RecursionError, MemoryError):
            raise OversizedError(
                "the code is nested too deeply or too large", region=self.region
            ) from None
        except Exception as exc:  # a codec bug must never surface as INTERNAL
            log_decoder_bug(exc, f"region {self.region}")
            raise MalformedError(
                f"the code could not be decoded ({type(exc).__name__})", region=self.region
            ) from None
        return VerifiedCode(status, key, self.spec)

    def _verify(self, envelope: CodeEnvelope, keys: KeyLookup) -> RegionKey:
        candidates = keys.keys_for(self.region, envelope.kid_hint)
        if not candidates:
            raise KeyUnknownError(
                f"region {self.region} has no key {envelope.kid_hint or '(no key id in code)'}",
                region=self.region,
                kid=envelope.kid_hint or "",
            )
        if envelope.kid_hint is None:
            candidates = candidates[:MAX_CANDIDATE_KEYS]
        failure: GatewayError = SignatureInvalidError(region=self.region)
        for key in candidates:
            if envelope.alg is not None and envelope.alg is not key.alg:
                failure = AlgorithmUnsupportedError(
                    f"the code declares {envelope.alg}, key {key.kid} is {key.alg}",
                    region=self.region,
                    kid=key.kid,
                )
                continue
            try:
                key.public_key.verify(envelope.signing_input, envelope.signature)
            except SignatureInvalidError:
                failure = SignatureInvalidError(
                    f"the signature does not verify with key {key.kid} of region {self.region}",
                    region=self.region,
                    kid=key.kid,
                )
                continue
            return key
        raise failure


def log_decoder_bug(exc: BaseException, where: str) -> None:
    """Log an unexpected exception from a decoder before it is reported as malformed input.

    Bad input raises the project's own errors; anything else is a bug (or a library that does not
    behave as the code expects), and must be told apart from a partner sending junk. Only the
    exception's type and the source line are logged, never its message: it may quote the input.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    at = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    log.error("decoder bug in %s: %s at %s (reported as MALFORMED)", where, type(exc).__name__, at)


def bounded(data: bytes, limit: int, what: str) -> bytes:
    """Return ``data`` unless it is longer than ``limit``; then raise :class:`OversizedError`."""
    if len(data) > limit:
        raise OversizedError(f"{what} exceeds {limit} bytes")
    return data


__all__ = [
    "MAX_CODE_CHARS",
    "MAX_DECOMPRESSED_BYTES",
    "CanonicalStatus",
    "CodeEnvelope",
    "Codec",
    "Colour",
    "FieldConvention",
    "MalformedError",
    "OnlineSpec",
    "Pseudonymise",
    "RegionAdapter",
    "RegionSpec",
    "VerifiedCode",
    "bounded",
    "log_decoder_bug",
]
