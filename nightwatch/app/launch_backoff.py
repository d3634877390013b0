"""The task watcher's memory of failed launches: a capped backoff per task, in this process.

Only for launches that met a transient or unexpected error (the task stays ``Normal``);
the delay of an automatic retry after a failed Job is in the table (``retry_at``) instead.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Collection
from dataclasses import dataclass

from nightwatch.domain.errors import BackendUnavailableError
from nightwatch.domain.model import Task
from nightwatch.domain.ports import Clock

logger = logging.getLogger("nightwatch.app.task_watcher")

RETRY_BASE = 2.0  # seconds before the first retry of a transient launch failure
RETRY_MAX = 120.0
# 2 s doubled 6 times passes the cap; a larger exponent only risks float overflow
_MAX_DOUBLINGS = math.ceil(math.log2(RETRY_MAX / RETRY_BASE))


@dataclass
class _Retry:
    """A task whose last launches failed: how often, and when it may be tried again."""

    failures: int = 0  # in a row, for the backoff
    unexpected: int = 0  # of those, the ones that met an error nightwatch does not expect
    not_before: float = 0.0  # monotonic


class LaunchBackoff:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._guard = threading.Lock()  # pool threads update it concurrently
        self._retry: dict[int, _Retry] = {}  # task id -> its failed launches

    def due(self, task_id: int, now: float) -> bool:
        with self._guard:
            retry = self._retry.get(task_id)
            return retry is None or retry.not_before <= now

    def clear(self, task_id: int) -> None:
        with self._guard:
            self._retry.pop(task_id, None)

    def keep_only(self, task_ids: Collection[int]) -> None:
        """Forget tasks that are no longer ``Normal`` (after a whole pass over them)."""
        with self._guard:
            self._retry = {k: v for k, v in self._retry.items() if k in task_ids}

    def unexpected(self, task: Task) -> int:
        """Count one more unexpected error for ``task``; how many it has met so far."""
        with self._guard:
            retry = self._retry.setdefault(task.id, _Retry())
            retry.unexpected += 1
            return retry.unexpected

    def back_off(self, task: Task, error: BackendUnavailableError, level: int = logging.WARNING) -> None:
        with self._guard:
            retry = self._retry.setdefault(task.id, _Retry())
            retry.failures += 1
            delay = min(RETRY_BASE * 2 ** min(retry.failures - 1, _MAX_DOUBLINGS), RETRY_MAX)
            if error.retry_after:
                delay = max(delay, error.retry_after)
            retry.not_before = self._clock.monotonic() + delay
        logger.log(level, "task %s: launch failed (%s); retrying in %.0fs", task.id, error, delay,
                   extra={"task_id": task.id})
