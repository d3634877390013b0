"""The ports: what the app needs from the outside world. Adapters subclass these."""

from __future__ import annotations

import enum
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from nightwatch.domain.jobspec import JobSpec
from nightwatch.domain.model import Fence, JobState, NewTask, Task, TaskStatus


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; for every duration."""
        ...

    def now(self) -> datetime:
        """Aware wall-clock time (UTC); for cron schedules and timestamps."""
        ...


class TaskStore(Protocol):
    """The ``task`` table. Every status change is a compare-and-set, fenced by epoch."""

    def migrate(self, stop: threading.Event | None = None) -> None:
        """Create or upgrade nightwatch's schema. Idempotent; safe to run concurrently;
        ``stop`` interrupts a wait for another replica's migration."""
        ...

    def schema_status(self) -> tuple[str | None, str]:
        """(the database's schema revision, the one this nightwatch needs); behind iff they differ.
        Only reads."""
        ...

    def add(self, task: NewTask) -> Task:
        """Insert a task (as the user's system would). DuplicateTaskError on (name, namespace)."""
        ...

    def get(self, task_id: int) -> Task:
        """TaskNotFoundError if there is none."""
        ...

    def page(self, statuses: Sequence[str] | None, after_id: int, limit: int) -> list[Task]:
        """Tasks with one of ``statuses`` (None = all) and ``id > after_id``, by id, at most ``limit``."""
        ...

    def count_by_status(self) -> dict[str, int]:
        """How many tasks have each status string (unknown strings included)."""
        ...

    def begin_term(self, name: str) -> int:
        """Start a leadership term for ``name``: a strictly increasing epoch."""
        ...

    def current_epoch(self, name: str) -> int:
        """The latest epoch for ``name`` (0 when no term was ever started)."""
        ...

    def transition(
        self,
        task_id: int,
        old: TaskStatus,
        new: TaskStatus,
        message: str | None = None,
        fence: Fence | None = None,
    ) -> bool:
        """Set ``new`` (and ``message``) if the task's status is still ``old`` and, with a
        fence, ``fence.epoch`` is still current, in one statement or transaction.

        Returns False when the status moved on (someone else wrote first). Raises
        FencedError when the epoch check refused the write; IllegalTransitionError when
        ``old -> new`` is not allowed by the state machine.
        """
        ...

    def close(self) -> None: ...


class LaunchOutcome(enum.StrEnum):
    CREATED = "created"
    ADOPTED = "adopted"  # a Job with this task's label already existed (earlier crash)


class JobGateway(Protocol):
    """Where Jobs run. A Job is named after its task and labelled with the task id."""

    def launch(self, task: Task, spec: JobSpec) -> LaunchOutcome:
        """Create the Job for ``task``, or adopt it if one labelled with this task's id exists.

        JobConflictError: a Job with that name exists for something else. JobRejectedError:
        refused for good (the message is the backend's own). BackendUnavailableError: try later.
        """
        ...

    def observe(self, tasks: Sequence[Task]) -> Mapping[int, JobState]:
        """The state of each task's Job, by task id; a task whose Job is missing is absent.

        Costs one (paged) list per namespace, never one call per task.
        """
        ...

    def close(self) -> None: ...


class LeaderLock(Protocol):
    """A lease held by one replica at a time. Never blocks longer than its timeouts."""

    name: str

    def acquire(self) -> float | None:
        """Try once. Seconds of validity left when acquired, None when someone else holds it."""
        ...

    def renew(self) -> float:
        """Reset the lease to its full TTL; seconds of validity. LeadershipLostError when
        the lease is missing or belongs to someone else."""
        ...

    def release(self) -> None:
        """Give the lease up (only if still ours) and wake waiting standbys."""
        ...

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds, returning early when a holder releases.

        True when woken by a release, False when the time ran out: a waiter cannot tell
        from the clock (a wake can come just as its timeout is due)."""
        ...

    def holder(self) -> str | None:
        """The identity of the current holder, if any."""
        ...

    def close(self) -> None: ...


@dataclass
class RunContext:
    """What a watcher run gets: the leadership term and a flag raised to cancel it."""

    fence: Fence | None
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def epoch(self) -> int | None:
        return self.fence.epoch if self.fence else None


@runtime_checkable
class Watcher(Protocol):
    """Periodic work of the leader. ``spec``: six-field cron with seconds or ``@every 2s``."""

    name: str
    spec: str

    def run(self, ctx: RunContext) -> None:
        """One run. Should return soon after ``ctx.cancelled`` is set."""
        ...


__all__ = [
    "Clock",
    "JobGateway",
    "LaunchOutcome",
    "LeaderLock",
    "RunContext",
    "TaskStatus",
    "TaskStore",
    "Watcher",
]
