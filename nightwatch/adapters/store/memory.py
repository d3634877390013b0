"""InMemoryTaskStore: the reference TaskStore, for tests and ``store.backend: memory``."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from nightwatch.domain.errors import DuplicateTaskError, FencedError, TaskIdConflictError, TaskNotFoundError
from nightwatch.domain.model import (
    ID_CLASH,
    CancelRequest,
    Fence,
    NewTask,
    Task,
    TaskEvent,
    TaskQuery,
    TaskStatus,
    check_bigint,
    check_new_task,
    check_requeue,
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
        self.event_log: list[TaskEvent] = []  # every event, in the order written: tests read it
        self.writes = 0  # status writes that changed a row: tests read it
        self._next_id = 1
        self._event_id = 0

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

    def find(self, name: str, namespace: str) -> Task:
        with self._mutex:
            for t in self.tasks.values():
                if t.name == name and t.namespace == namespace:
                    return t
        raise TaskNotFoundError(f"{name!r} in namespace {namespace!r}")

    def page(self, statuses: Sequence[str] | None, after_id: int, limit: int) -> list[Task]:
        check_bigint("id", after_id)
        wanted = None if statuses is None else {str(s) for s in statuses}
        with self._mutex:
            ids = sorted(
                i for i, t in self.tasks.items() if i > after_id and (wanted is None or t.status in wanted)
            )
            return [self.tasks[i] for i in ids[:limit]]

    def query(self, q: TaskQuery) -> list[Task]:
        with self._mutex:
            found = sorted((t for t in self.tasks.values() if _matches(t, q)), key=lambda t: -t.id)
            return found[: q.limit]

    def count(self, q: TaskQuery) -> int:
        with self._mutex:
            return sum(1 for t in self.tasks.values() if _matches(t, q))

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
        *,
        attempt: int | None = None,
        replica: str = "",
    ) -> bool:
        check_transition(old, new)
        with self._mutex:
            self._check_fence(fence)
            task = self.tasks.get(task_id)
            if task is None or task.status != old or (attempt is not None and task.attempt != attempt):
                return False
            now = self._clock.now()
            self.tasks[task_id] = replace(
                task, status=str(new), message=fit_message(message), updated_at=now,
                finished_at=now if new.terminal else task.finished_at,
            )
            self._event(task, task.attempt, old, new, message, fence, replica, now)
            return True

    def requeue(
        self,
        task_id: int,
        old: TaskStatus,
        attempt: int,
        message: str | None = None,
        *,
        retry_at: datetime | None = None,
        force: bool = False,
        fence: Fence | None = None,
        replica: str = "",
        unless_cancelled: bool = False,
    ) -> bool:
        check_requeue(old, force=force)
        with self._mutex:
            self._check_fence(fence)
            task = self.tasks.get(task_id)
            if task is None or task.status != old or task.attempt != attempt:
                return False
            if unless_cancelled and task.cancel_requested_at is not None:
                return False
            now = self._clock.now()
            self.tasks[task_id] = replace(
                task, status=str(TaskStatus.NORMAL), attempt=attempt + 1, message=fit_message(message),
                retry_at=retry_at, finished_at=None, cancel_requested_at=None, cancel_reason=None,
                updated_at=now,
            )
            self._event(task, attempt + 1, old, TaskStatus.NORMAL, message, fence, replica, now)
            return True

    def request_cancel(self, task_id: int, reason: str | None = None, *, replica: str = "") -> CancelRequest:
        check_bigint("id", task_id)
        with self._mutex:
            task = self.tasks.get(task_id)
            if task is None:
                raise TaskNotFoundError(task_id)
            if task.status in _TERMINAL or task.cancel_requested_at is not None:
                return CancelRequest(task, requested=False)
            task = self.tasks[task_id] = replace(
                task, cancel_requested_at=self._clock.now(), cancel_reason=fit_message(reason)
            )
            return CancelRequest(task, requested=True)

    def events(self, task_id: int, limit: int = 1000) -> list[TaskEvent]:
        with self._mutex:
            mine = sorted((e for e in self.event_log if e.task_id == task_id), key=lambda e: e.id or 0)
        return mine[-limit:] if limit > 0 else []

    def prune_events(self, before: datetime, limit: int = 10_000) -> int:
        with self._mutex:
            old = [e for e in self.event_log if e.at is not None and e.at < before][:limit]
            gone = {e.id for e in old}
            self.event_log = [e for e in self.event_log if e.id not in gone]
            return len(old)

    def close(self) -> None:
        pass

    # -- internals ----------------------------------------------------------------------------

    def _check_fence(self, fence: Fence | None) -> None:
        if fence is not None and self.epochs.get(fence.name, 0) != fence.epoch:
            raise FencedError(fence.name, fence.epoch)

    def _event(self, task: Task, attempt: int, old: TaskStatus, new: TaskStatus, message: str | None,
               fence: Fence | None, replica: str, now: datetime) -> None:
        self.writes += 1
        self._event_id += 1
        self.event_log.append(TaskEvent(
            task_id=task.id, attempt=attempt, at=now, from_status=str(old), to_status=str(new),
            message=fit_message(message), epoch=fence.epoch if fence else None,
            replica=fence.replica if fence else replica, id=self._event_id,
        ))


_TERMINAL = frozenset(str(s) for s in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED))


def _matches(t: Task, q: TaskQuery) -> bool:
    return ((not q.statuses or t.status in q.statuses)
            and (q.namespace is None or t.namespace == q.namespace)
            and (q.name is None or t.name == q.name)
            and (q.user_id is None or t.user_id == q.user_id)
            and (q.since is None or (t.created_at is not None and t.created_at >= q.since))
            and (q.before_id is None or t.id < q.before_id))
