"""Progress of a batch conversion: a bar on a terminal, periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """A progress bar on a terminal (stderr), periodic lines otherwise, nothing when quiet."""

    def __init__(self, out: TextIO | None, total_bytes: int, *, bar: bool, every: float = 10.0):
        self._out = out
        self._total = max(total_bytes, 1)
        self._bar = bar
        self._every = 0.1 if bar else every
        self._start = time.monotonic()
        self._last = self._start
        self._start_bytes = 0

    def begin(self, done_bytes: int) -> None:
        """Bytes already behind us (skipped rows of a resumed job) do not count toward rate."""
        self._start_bytes = done_bytes

    def update(self, rows: int, done_bytes: int, *, final: bool = False) -> None:
        if self._out is None:
            return
        now = time.monotonic()
        if not final and now - self._last < self._every:
            return
        self._last = now
        elapsed = max(now - self._start, 1e-9)
        rate = rows / elapsed
        fraction = min(done_bytes / self._total, 1.0)
        byte_rate = (done_bytes - self._start_bytes) / elapsed
        left = (self._total - done_bytes) / byte_rate if byte_rate > 0 else 0.0
        if self._bar:
            width = 30
            filled = int(fraction * width)
            self._out.write(
                f"\r{fraction * 100:5.1f}% |{'█' * filled}{'·' * (width - filled)}| "
                f"{rows:,} rows  {rate:,.0f} rows/s  {_clock(left)} left "
            )
            if final:
                self._out.write("\n")
        else:
            self._out.write(
                f"convert-batch: {rows:,} rows ({fraction * 100:.0f}%), {rate:,.0f} rows/s, "
                f"about {_clock(left)} left\n"
            )
        self._out.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
