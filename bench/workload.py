"""The benchmark's requests: realistic partner codes for the gateway, IDL1 codes for the ideal.

Requests are serialised up front (``RecogniseRequest`` bytes) so that the load generator only
sends bytes and parses replies. Each request carries the reason its reply must have.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from adapters.base import Colour
from adapters.simulator import PartnerSimulator, fake_holder
from gateway.api.v1 import recognition_pb2 as pb
from keys.model import Mode

RECOGNISED = "RECOGNISED"
NOT_GREEN = "NOT_GREEN"


@dataclass(frozen=True)
class Request:
    """One pre-serialised request and the reason its reply must carry."""

    data: bytes
    request_id: str
    expect: str
    region: str
    new_conversion: bool = False  # a green convert-mode code the gateway has not seen yet


@dataclass
class Mix:
    """What the generated codes look like."""

    non_green: float = 0.10  # share of yellow and red codes (half each)
    min_age: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(hours=6)
    lifetime: timedelta = timedelta(hours=24)


@dataclass
class GatewayCodes:
    """Generates codes of all 14 partner regions (round robin), each for a new fake holder."""

    simulator: PartnerSimulator
    now: datetime
    seed: int = 20200311
    mix: Mix = field(default_factory=Mix)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._issuers = self.simulator.issuers()
        self._next = 0
        self.generated = 0

    def take(self, count: int, *, fresh: bool) -> list[Request]:
        """``count`` new codes; ``fresh`` marks green convert-mode ones as new conversions."""
        rng = self._rng
        out = []
        for _ in range(count):
            issuer = self._issuers[self._next % len(self._issuers)]
            self._next += 1
            draw = rng.random()
            if draw >= self.mix.non_green:
                colour = Colour.GREEN
            elif draw < self.mix.non_green / 2:
                colour = Colour.YELLOW
            else:
                colour = Colour.RED
            holder_id, name = fake_holder(rng)
            age = rng.uniform(self.mix.min_age.total_seconds(), self.mix.max_age.total_seconds())
            issued_at = (self.now - timedelta(seconds=age)).replace(microsecond=0)
            code = issuer.issue(
                holder_id=holder_id,
                holder_name=name,
                colour=colour,
                issued_at=issued_at,
                expires_at=issued_at + self.mix.lifetime,
                code_id=f"{rng.getrandbits(64):016x}",
            )
            green = colour is Colour.GREEN
            self.generated += 1
            request_id = f"g{self.generated}"
            out.append(
                Request(
                    pb.RecogniseRequest(request_id=request_id, code=code).SerializeToString(),
                    request_id,
                    RECOGNISED if green else NOT_GREEN,
                    issuer.spec.code,
                    new_conversion=fresh and green and issuer.spec.mode is Mode.CONVERT,
                )
            )
        return out


def requests_from(codes: Sequence[tuple[str, str]], prefix: str) -> list[Request]:
    """Pre-serialised requests for (code, expected reason) pairs."""
    return [
        Request(
            pb.RecogniseRequest(request_id=f"{prefix}{i}", code=code).SerializeToString(),
            f"{prefix}{i}",
            expect,
            "999999",
        )
        for i, (code, expect) in enumerate(codes)
    ]


def interleave(pool: Sequence[Request], fresh: Sequence[Request], every: int) -> list[Request]:
    """The pool with one fresh request placed after every ``every - 1`` pool requests, until the
    fresh ones run out (the load generator then cycles: everything is a repeat)."""
    if not fresh or every < 1:
        return list(pool)
    out: list[Request] = []
    pool_iter = _cycle(pool)
    for request in fresh:
        out.extend(next(pool_iter) for _ in range(every - 1))
        out.append(request)
    return out


def _cycle(items: Sequence[Request]) -> Iterator[Request]:
    while True:
        yield from items
