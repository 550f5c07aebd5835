"""Waiting for a condition with a deadline, never for a fixed time.

A loaded machine makes everything slower, never a different order of events: a test awaits the
hook that says its condition holds (an event, a flush, a pushed version) and, where there is no
such hook, polls the condition with these helpers. The deadline is generous because only a
failing test ever reaches it; a passing one returns as soon as the condition holds.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0  # seconds; far beyond any passing run, well within pytest-timeout
POLL = 0.01  # seconds between two looks at the condition


def wait_until(
    predicate: Callable[[], T], *, timeout: float = DEFAULT_TIMEOUT, what: str = ""
) -> T:
    """Call ``predicate`` until it returns a true value, and return that value.

    Raises AssertionError (naming ``what``) when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what or predicate!r}")
        time.sleep(POLL)
    return value


async def eventually(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "",
) -> T:
    """Async :func:`wait_until`: ``predicate`` may be a plain or an async callable; the event
    loop keeps running between two looks. Returns the first true value.

    Raises AssertionError (naming ``what``) when ``timeout`` seconds pass first.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if loop.time() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what or predicate!r}")
        await asyncio.sleep(POLL)


async def measured(awaitable: Awaitable[T], *, timeout: float, what: str = "") -> tuple[T, float]:
    """Await ``awaitable`` with a deadline; its result and how long it took (seconds, for the
    test's output: never asserted as a timing). Raises AssertionError (naming ``what``) when
    ``timeout`` seconds pass first."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        value = await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what or awaitable!r}") from None
    return value, loop.time() - started
