"""Give back the memory that the C allocator keeps after a burst of large messages.

gRPC reads a message whole before any limit or handler refuses it, in buffers allocated by its
own threads; glibc keeps most of what they free (fragmented arenas: 200 concurrent 2 MiB
requests left the server some 200 MB larger, bench/oversize.py). :class:`MemoryReleaser`
watches the resident set and calls ``malloc_trim(0)`` when it is more than a slack above its
size at the start, so that the process returns to about its size before the burst. Where
there is no glibc (or no ``/proc``) it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable

log = logging.getLogger("trustgw.memory")

SLACK_BYTES = 32 * 1024 * 1024  # growth of the resident set that triggers a trim
INTERVAL = 1.0  # seconds between looks
MAX_BACKOFF = 30.0  # seconds, between trims that cannot bring the resident set down


def resident_bytes() -> int | None:
    """This process's resident set size, or ``None`` where /proc is not available."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _glibc_malloc_trim() -> Callable[[], object] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class MemoryReleaser:
    """Trims the C heap when the resident set is more than ``slack`` bytes above its size at the
    start (the floor). When a trim cannot bring it back under (the memory is in use), the next
    attempt waits twice as long, up to ``max_backoff`` seconds. ``resident`` and ``trim`` are
    injectable for tests; times are the caller's monotonic clock."""

    def __init__(
        self,
        slack: int = SLACK_BYTES,
        resident: Callable[[], int | None] = resident_bytes,
        trim: Callable[[], object] | None = None,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self._slack = slack
        self._resident = resident
        self._trim = trim if trim is not None else _glibc_malloc_trim()
        self._floor = resident()
        self._max_backoff = max_backoff
        self._backoff = 0.0
        self._not_before = 0.0
        self.trims = 0

    def due(self, now: float) -> bool:
        """True when the resident set is above the floor by more than the slack, trimming is
        possible and no back-off is pending at monotonic time ``now``."""
        if self._trim is None or self._floor is None or now < self._not_before:
            return False
        resident = self._resident()
        return resident is not None and resident - self._floor > self._slack

    def release(self, now: float) -> None:
        """Trim now (``malloc_trim`` holds no Python lock: run it off the event loop)."""
        if self._trim is None or self._floor is None:
            return
        before = self._resident()
        self._trim()
        after = self._resident()
        self.trims += 1
        if after is not None and after - self._floor > self._slack:
            self._backoff = min(max(2 * self._backoff, 1.0), self._max_backoff)
        else:
            self._backoff = 0.0
        self._not_before = now + self._backoff
        if before is not None and after is not None:
            log.info(
                "returned %d MB of freed memory to the system (resident %d MB)",
                (before - after) // 1_000_000,
                after // 1_000_000,
            )

    async def run(self, interval: float = INTERVAL) -> None:
        """Look every ``interval`` seconds until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            if self.due(loop.time()):
                await asyncio.to_thread(self.release, loop.time())
