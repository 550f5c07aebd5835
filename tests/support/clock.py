"""The suite's one reading of the real clock, and the fixed time of everything else.

A gateway that serves (``Gateway.open``, ``trustgw serve``) or a command without ``--at`` reads
the real clock itself, once per request: to ask it about codes, keys and lists valid *now*, a
test issues them around :data:`REAL_NOW`, the real time when the suite was collected (to the
second). Everything that takes a ``now`` gets a fixed time instead: :data:`T0`.
"""

from __future__ import annotations

from datetime import UTC, datetime

REAL_NOW = datetime.now(UTC).replace(microsecond=0)
T0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)  # 16:00 China Standard Time
