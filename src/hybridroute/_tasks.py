"""TaskSupervisor: the only place the gateway starts background tasks.

It keeps a reference to every task (so none is garbage-collected mid-flight), logs a task that
dies with an exception instead of losing it, and cancels and drains them all on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["TaskSupervisor"]

log = logging.getLogger("hybridroute.tasks")


class TaskSupervisor:
    """Owns background tasks from spawn to shutdown."""

    def __init__(self, name: str = "gateway") -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Start `coro` as a supervised task named `name`."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"task supervisor {self._name!r} is shut down; cannot start {name}")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error(
                "background task %s failed: %s",
                task.get_name(),
                exc,
                exc_info=(type(exc), exc, exc.__traceback__),
            )

    async def aclose(self, grace_s: float = 5.0) -> None:
        """Cancel every task and wait up to `grace_s` seconds for them to finish."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                log.warning(
                    "background task %s did not stop within %.1fs", task.get_name(), grace_s
                )

    def __len__(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<TaskSupervisor {self._name} {state} tasks={len(self._tasks)}>"
