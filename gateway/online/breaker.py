"""A circuit breaker per partner: closed -> open after N consecutive failures -> half-open probe
after a cool-down -> closed on success (docs/partners.md §9.6).

Time is a monotonic number of seconds passed in by the caller, so every transition is testable
without sleeping.
"""

from __future__ import annotations

from enum import StrEnum


class BreakerState(StrEnum):
    """Where a breaker is; the gauge ``trustgw_partner_breaker_state`` shows it as 0/1/2."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


STATE_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class CircuitBreaker:
    """Counts consecutive failures; while open, calls are refused without being made."""

    def __init__(self, failures: int, cooldown: float) -> None:
        if failures < 1 or cooldown <= 0:
            raise ValueError("a breaker opens after at least 1 failure, for a positive time")
        self._threshold = failures
        self._cooldown = cooldown
        self._failures = 0
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probing = False

    def state(self, now: float) -> BreakerState:
        """The state at monotonic time ``now`` (open turns half-open once the cool-down passed)."""
        if self._state is BreakerState.OPEN and now - self._opened_at >= self._cooldown:
            self._state = BreakerState.HALF_OPEN
            self._probing = False
        return self._state

    def allow(self, now: float) -> bool:
        """True when a call may be made now: closed, or half-open with no probe in flight (this
        call becomes the probe)."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def succeeded(self) -> None:
        """A call was answered: the breaker closes and the count starts again."""
        self._failures = 0
        self._state = BreakerState.CLOSED
        self._probing = False

    def failed(self, now: float) -> None:
        """A call failed; the N-th consecutive failure, or a failed probe, opens the breaker."""
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
            self._state = BreakerState.OPEN
            self._opened_at = now
            self._probing = False

    def retry_in(self, now: float) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self.state(now) is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._cooldown - (now - self._opened_at))
