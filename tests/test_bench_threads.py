"""bench/pyspy.py --threads: the server's CPU per thread, read from /proc (bench/PROFILE.md)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bench.pyspy import thread_report, thread_ticks

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")


def test_thread_ticks_lists_this_process_main_thread() -> None:
    ticks = thread_ticks(os.getpid())
    assert os.getpid() in ticks
    name, spent = ticks[os.getpid()]
    assert name and spent >= 0


def test_thread_report_splits_main_and_python_threads_and_sums_the_rest() -> None:
    before = {1: ("python", 10), 2: ("python", 5), 3: ("event_engine", 0), 4: ("event_engine", 1)}
    after = {
        1: ("python", 70),
        2: ("python", 15),
        3: ("event_engine", 10),
        4: ("event_engine", 11),
        5: ("python", 0),  # born in the window
    }
    lines = thread_report(1, before, after, per_call=1000.0)
    assert lines[0] == "  threads: 5 live, 90 ticks in the window"
    assert "   66.7%     667 µs  main thread (x1)" in lines
    assert "   22.2%     222 µs  event_engine (x2)" in lines
    assert "   11.1%     111 µs  python thread 2 (x1)" in lines
    assert lines[1].endswith("main thread (x1)")


def test_a_store_thread_carries_its_name_for_the_os() -> None:
    import asyncio
    import threading

    from keys.store.sqlite import Database

    async def go() -> str:
        db = Database(":memory:")
        await db.connect(lambda conn: None)
        try:
            tid = await db.run("tid", lambda conn: threading.get_native_id(), write=False)
            return (Path(f"/proc/{os.getpid()}/task/{tid}/comm")).read_text().strip()
        finally:
            await db.close()

    assert asyncio.run(go()) == "store :memory:"
