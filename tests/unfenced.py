"""The positive controls of the fencing tests: a store that drops the epoch check.

Production has no switch for this. ``UnfencedStore`` wraps any TaskStore: its status writes
ignore the fence, and it reports as current the epoch this replica last began, so a deposed
leader believes it still leads -- exactly what a store without fencing would let it do.
"""

from __future__ import annotations

from typing import Any

from nightwatch.domain.model import Fence, TaskStatus
from nightwatch.domain.ports import TaskStore


class UnfencedStore:
    def __init__(self, inner: TaskStore) -> None:
        self.inner = inner
        self._began: dict[str, int] = {}

    def begin_term(self, name: str) -> int:
        self._began[name] = self.inner.begin_term(name)
        return self._began[name]

    def current_epoch(self, name: str) -> int:
        return self._began.get(name) or self.inner.current_epoch(name)

    def transition(self, task_id: int, old: TaskStatus, new: TaskStatus, message: str | None = None,
                   fence: Fence | None = None, **keywords: Any) -> bool:
        return self.inner.transition(task_id, old, new, message, None, **keywords)

    def requeue(self, task_id: int, old: TaskStatus, attempt: int, message: str | None = None,
                **keywords: Any) -> bool:
        return self.inner.requeue(task_id, old, attempt, message, **{**keywords, "fence": None})

    def __getattr__(self, name: str) -> Any:  # everything else is the real store's
        return getattr(self.inner, name)
