"""The serving gateway's collector settings (gateway.runtime.heap; bench/PROFILE.md)."""

from __future__ import annotations

import contextlib
import gc
import weakref
from collections.abc import Iterator

from gateway.runtime import heap


@contextlib.contextmanager
def _settled() -> Iterator[None]:
    """``heap.settle()`` for the block, then the test process's own collector settings back."""
    thresholds = gc.get_threshold()
    gc.unfreeze()
    try:
        heap.settle()
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_settle_freezes_what_start_up_left_and_raises_the_young_threshold() -> None:
    with _settled():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, *heap.OLDER_THRESHOLDS)


def test_cycles_are_still_collected_after_settle() -> None:
    class Node:
        other: object = None

    with _settled():
        a, b = Node(), Node()
        a.other, b.other = b, a
        probe = weakref.ref(a)
        del a, b
        gc.collect()
        assert probe() is None
