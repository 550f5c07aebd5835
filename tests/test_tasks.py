"""gateway.runtime.tasks.Background: the one start/stop helper of the gateway's background work."""

from __future__ import annotations

import asyncio

import pytest
from support.aio import run

from gateway.runtime.tasks import Background


def test_started_work_runs_once_and_stop_waits_until_it_has_ended() -> None:
    async def go() -> None:
        began = asyncio.Event()
        starts: list[int] = []
        cleaned: list[bool] = []

        async def work() -> None:
            starts.append(1)
            began.set()
            try:
                await asyncio.Event().wait()  # until cancelled
            finally:
                await asyncio.sleep(0)  # cleanup that itself awaits
                cleaned.append(True)

        task = Background("test-work")
        assert not task.running
        task.start(work)
        task.start(work)  # already started: no second task
        assert task.running
        await began.wait()
        await task.stop()
        assert starts == [1]
        assert cleaned == [True]  # the work's own cleanup ran before stop returned
        assert not task.running

    run(go())


def test_stop_without_start_is_a_no_op_and_a_stopped_task_starts_again() -> None:
    async def go() -> None:
        task = Background("again")
        await task.stop()
        ran = asyncio.Event()

        async def work() -> None:
            ran.set()
            await asyncio.Event().wait()

        task.start(work)
        await ran.wait()
        await task.stop()
        ran.clear()
        task.start(work)
        await ran.wait()
        await task.stop()

    run(go())


def test_a_failure_that_ended_the_work_is_raised_by_stop() -> None:
    async def go() -> None:
        async def work() -> None:
            raise RuntimeError("the loop broke")

        task = Background("failing")
        task.start(work)
        await asyncio.sleep(0)  # let it run and fail
        assert not task.running
        with pytest.raises(RuntimeError, match="the loop broke"):
            await task.stop()

    run(go())


def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    async def go() -> None:
        began = asyncio.Event()
        release = asyncio.Event()

        async def work() -> None:
            began.set()
            try:
                await asyncio.Event().wait()
            finally:
                await release.wait()  # a slow cleanup: stop() is still waiting for it

        task = Background("slow-cleanup")
        task.start(work)
        await began.wait()
        stopper = asyncio.create_task(task.stop())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        stopper.cancel()  # the caller of stop() is cancelled while it waits
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await stopper

    run(go())


def test_start_needs_a_running_event_loop() -> None:
    async def work() -> None:  # pragma: no cover - never started
        pass

    with pytest.raises(RuntimeError):
        Background("no-loop").start(work)
