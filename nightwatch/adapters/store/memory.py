"""InMemoryTaskStore: the reference TaskStore, for tests and ``store.backend: memory``."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

from nightwatch.domain.errors import DuplicateTaskError, FencedError, TaskIdConflictError, TaskNotFoundError
from nightwatch.domain.model import (
    ID_CLASH,
    Fence,
    NewTask,
    Task,
    TaskStatus,
    check_bigint,
    check_new_task,
    check_transition,
    fit_message,
)
from nightwatch.domain.ports import Clock, TaskStore


class InMemoryTaskStore(TaskStore):
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._mutex = threading.Lock()
        self.tasks: dict[int, Task] = {}
        self.epochs: dict[str, int] = {}
        self.writes = 0  # status writes that changed a row: tests read it
        self._next_id = 1

    def migrate(self, stop: threading.Event | None = None) -> None:
        pass

    def schema_status(self) -> tuple[str | None, str]:
        return "memory", "memory"  # nothing to migrate: always current

    def add(self, task: NewTask) -> Task:
        check_new_task(task)
        with self._mutex:
            if any(t.name == task.name and t.namespace == task.namespace for t in self.tasks.values()):
                raise DuplicateTaskError(f"a task named {task.name!r} already exists in {task.namespace!r}")
            if self._next_id in self.tasks:  # a row was put in ``tasks`` by hand, as a user's system may
                self._next_id += 1  # a sequence moves on after a failed insert, too
                raise TaskIdConflictError(ID_CLASH.format(id=self._next_id - 1, hint=""))
            now = self._clock.now()
            new = Task(
                id=self._next_id, name=task.name, namespace=task.namespace, info=task.info,
                status=str(task.status), user_id=task.user_id, created_at=now, updated_at=now,
            )
            self.tasks[new.id] = new
            self._next_id += 1
            return new

    def get(self, task_id: int) -> Task:
        check_bigint("id", task_id)
        with self._mutex:
            try:
                return self.tasks[task_id]
            except KeyError:
                raise TaskNotFoundError(task_id) from None

    def page(self, statuses: Sequence[str] | None, after_id: int, limit: int) -> list[Task]:
        check_bigint("id", after_id)
        wanted = None if statuses is None else {str(s) for s in statuses}
        with self._mutex:
            ids = sorted(
                i for i, t in self.tasks.items() if i > after_id and (wanted is None or t.status in wanted)
            )
            return [self.tasks[i] for i in ids[:limit]]

    def count_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._mutex:
            for t in self.tasks.values():
                counts[t.status] = counts.get(t.status, 0) + 1
        return counts

    def begin_term(self, name: str) -> int:
        with self._mutex:
            self.epochs[name] = self.epochs.get(name, 0) + 1
            return self.epochs[name]

    def current_epoch(self, name: str) -> int:
        with self._mutex:
            return self.epochs.get(name, 0)

    def transition(
        self,
        task_id: int,
        old: TaskStatus,
        new: TaskStatus,
        message: str | None = None,
        fence: Fence | None = None,
    ) -> bool:
        check_transition(old, new)
        with self._mutex:
            if fence is not None and self.epochs.get(fence.name, 0) != fence.epoch:
                raise FencedError(fence.name, fence.epoch)
            task = self.tasks.get(task_id)
            if task is None or task.status != old:
                return False
            self.tasks[task_id] = replace(
                task, status=str(new), message=fit_message(message), updated_at=self._clock.now()
            )
            self.writes += 1
            return True

    def close(self) -> None:
        pass
