"""Background work, one way: a named asyncio task that is started once and stopped by
cancelling it and waiting until it has ended.

The gateway's long-lived helpers (the conversion writer, the recognition log, the retention
purge, the registry refresh, the health watch, the memory releaser) each own one
:class:`Background`; nothing they do outlives their ``stop``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class Background:
    """One background task, started with :meth:`start` and stopped with :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """True from :meth:`start` until :meth:`stop` (or until the work has ended)."""
        return self._task is not None and not self._task.done()

    def start(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work()`` as a task on the running loop, unless one is already started.

        Raises ``RuntimeError`` when no event loop is running.
        """
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(work(), name=self.name)

    async def stop(self) -> None:
        """Cancel the task and wait until it has ended; a no-op when it was never started.

        An exception that had ended the work is raised here. The caller's own cancellation
        is not swallowed: it propagates once the task has ended.
        """
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
