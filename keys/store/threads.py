"""The stores' own threads, named for the OS."""

from __future__ import annotations

import ctypes
import sys

_PR_SET_NAME = 15


def name_os_thread(name: str) -> None:
    """Name the calling thread for the OS (Linux: /proc/PID/task/TID/comm, 15 bytes), so that
    ``bench/pyspy.py --threads``, ``top -H`` and py-spy tell a store's thread from the others
    (Python names its threads only for itself). Does nothing elsewhere or when libc refuses."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded: no library search, no subprocess
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        return
