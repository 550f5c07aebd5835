"""Offline verification of credentials written by others, through the shared codecs.

Three formats, one shape of answer:

* :mod:`adapters.credentials.hc1`: EU Digital COVID Certificates (``HC1:``, COSE_Sign1);
* :mod:`adapters.credentials.shc`: SMART Health Cards (``shc:/``, JWS);
* :mod:`adapters.credentials.region`: a partner region's own format, through its adapter.

Each module's ``verify(...)`` returns the verified claims or raises a
:class:`keys.errors.ForeignDataError` whose message starts with the step that failed;
:func:`check` turns either into a :class:`Verdict`. Nothing here imports grpc.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from adapters.base import log_decoder_bug
from keys.errors import ForeignDataError, GatewayError, MalformedError, OversizedError

MAX_JSON_SAFE_DEPTH = 64


@dataclass(frozen=True)
class Verdict:
    """The answer of an offline check: accept or reject, why, and what the code says."""

    accepted: bool
    reason: str  # stable machine-readable code: "OK" or a keys.errors reason
    detail: str  # for people: names the step that failed
    claims: Mapping[str, Any] = field(default_factory=dict)  # JSON-safe; {} unless verified

    def to_json(self) -> dict[str, Any]:
        """The verdict as ``trustgw verify --json`` prints it."""
        return {
            "verdict": "accept" if self.accepted else "reject",
            "reason": self.reason,
            "detail": self.detail,
            "claims": dict(self.claims),
        }


@contextmanager
def step(name: str) -> Iterator[None]:
    """Run one verification step; any failure becomes a project error whose message names it.

    The project's own errors keep their class (and so their reason); anything else a decoder
    might raise is logged as a bug and becomes :class:`MalformedError`, so a verdict never
    depends on an internal bug.
    """
    try:
        yield
    except GatewayError as exc:
        if not exc.message.startswith(f"{name}: "):
            exc.message = f"{name}: {exc.message}"
            exc.args = (exc.message,)
        raise
    except (RecursionError, MemoryError):
        raise OversizedError(f"{name}: the input is nested too deeply or too large") from None
    except Exception as exc:
        log_decoder_bug(exc, f"step {name}")
        raise MalformedError(
            f"{name}: the input could not be decoded ({type(exc).__name__})"
        ) from None


def check(verify: Callable[[dict[Any, Any]], Mapping[Any, Any]], ok_detail: str) -> Verdict:
    """Run ``verify`` and turn its claims, or the foreign-data error it raises, into a verdict.

    ``verify`` receives a dict into which it puts the claims as soon as their signature verified,
    so that a code refused afterwards (expired, revoked ...) still shows what it says.
    """
    verified: dict[Any, Any] = {}
    try:
        claims = verify(verified)
    except ForeignDataError as exc:
        return Verdict(False, exc.reason, exc.message, json_safe(verified))
    return Verdict(True, "OK", ok_detail, json_safe(claims))


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` with only JSON types: bytes as base64url, map keys as strings, tags as objects."""
    if depth > MAX_JSON_SAFE_DEPTH:
        raise OversizedError("the claims are nested too deeply")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.urlsafe_b64encode(bytes(value)).rstrip(b"=").decode("ascii")
    if isinstance(value, Mapping):
        return {_key(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    tag = getattr(value, "tag", None)
    if isinstance(tag, int) and hasattr(value, "value"):  # cbor2.CBORTag
        return {"tag": tag, "value": json_safe(value.value, depth + 1)}
    return repr(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, (bytes, bytearray)):
        return base64.urlsafe_b64encode(bytes(key)).rstrip(b"=").decode("ascii")
    return str(json_safe(key)) if not isinstance(key, (int, float, bool)) else str(key)


__all__ = ["Verdict", "check", "json_safe", "step"]
