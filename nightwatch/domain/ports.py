"""The ports: what the app needs from the outside world. Adapters subclass these."""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from nightwatch.domain.jobspec import JobSpec
from nightwatch.domain.model import (
    CancelRequest,
    Fence,
    JobState,
    NewTask,
    Task,
    TaskEvent,
    TaskQuery,
    TaskStatus,
)


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
        *,
        attempt: int | None = None,
        replica: str = "",
    ) -> bool:
        """Set ``new`` (and ``message``) if the task's status is still ``old`` and, with a
        fence, ``fence.epoch`` is still current, in one statement or transaction.

        Returns False when the status moved on (someone else wrote first). Raises
        FencedError when the epoch check refused the write; IllegalTransitionError when
        ``old -> new`` is not allowed by the state machine.

        ``attempt``, when given, is compared too (the write applies only to that attempt).
        A write that applies records its ``TaskEvent`` (the task's attempt, ``fence.epoch``
        and ``fence.replica``, or ``replica`` without a fence) in the same statement or
        transaction; a refused or lost write records none. A terminal ``new`` sets
        ``finished_at``.
        """
        ...

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
        """Start the next attempt: if the task is still ``old`` at ``attempt``, set ``Normal``,
        ``attempt + 1``, ``message``, ``retry_at``, and clear ``finished_at`` and the cancel
        request; with its event (from ``old`` to ``Normal``), in one statement or transaction.

        ``unless_cancelled`` (the automatic retry): only while no cancel is requested either,
        so a cancel that lands after the caller read the row is never erased (False: the
        next run carries the cancel out).

        False when the task moved on; FencedError and IllegalTransitionError as
        ``transition`` (``Succeeded`` needs ``force``).
        """
        ...

    def request_cancel(self, task_id: int, reason: str | None = None, *, replica: str = "") -> CancelRequest:
        """Ask for a cancel: set ``cancel_requested_at`` (now) and ``cancel_reason`` unless the
        task is terminal or a cancel is already pending; the leader carries it out. Only the
        two cancel columns are written (no status change, no event). TaskNotFoundError."""
        ...

    def find(self, name: str, namespace: str) -> Task:
        """The task with this name in this namespace (byte for byte). TaskNotFoundError."""
        ...

    def query(self, q: TaskQuery) -> list[Task]:
        """Tasks matching ``q``, newest (highest id) first, at most ``q.limit``, keyset-paged
        on ``q.before_id``."""
        ...

    def count(self, q: TaskQuery) -> int:
        """How many tasks match ``q``'s filters (``before_id`` and ``limit`` included: with them
        it is how many are left after this page)."""
        ...

    def events(self, task_id: int, limit: int = 1000) -> list[TaskEvent]:
        """The task's events, oldest first (in the order they were written: by id), at most
        ``limit`` (the newest)."""
        ...

    def prune_events(self, before: datetime, limit: int = 10_000) -> int:
        """Delete at most ``limit`` events older than ``before``; how many went. Only events:
        task rows are never deleted."""
        ...

    def close(self) -> None: ...


class LaunchOutcome(enum.StrEnum):
    CREATED = "created"
    ADOPTED = "adopted"  # a Job with this task's label already existed (earlier crash)


class JobGateway(Protocol):
    """Where Jobs run. One Job per attempt of a task, named ``task.job_name`` and labelled
    with the task id and the attempt; the calls act on the task's current attempt."""

    def launch(self, task: Task, spec: JobSpec) -> LaunchOutcome:
        """Create the Job for ``task``, or adopt it if one labelled with this task's id and
        attempt exists (a Job of another attempt is never adopted).

        JobConflictError: a Job with that name exists for something else. JobRejectedError:
        refused for good (the message is the backend's own). BackendUnavailableError: try later.
        """
        ...

    def observe(self, tasks: Sequence[Task]) -> Mapping[int, JobState]:
        """The state of each task's Job, by task id; a task whose Job is missing is absent.

        Costs one (paged) list per namespace, never one call per task.
        """
        ...

    def cancel(self, task: Task) -> None:
        """Stop and delete the Job of the task's current attempt (Kubernetes: propagation
        Background; local: SIGTERM to its process group, SIGKILL after a grace). A Job that
        is already gone is not an error. BackendUnavailableError: try later."""
        ...

    def logs(self, task: Task, tail: int | None = 100, follow: bool = False,
             stop: threading.Event | None = None) -> Iterator[str]:
        """The output of the current attempt's Job, line by line (without newlines): the last
        ``tail`` lines (None = all), then, with ``follow``, new lines as they come until the
        Job ends -- or, within a second or two, until ``stop`` is set (the reader went away).
        Memory stays bounded whatever the log's size. JobNotFoundError when there is no Job
        or no log yet; BackendUnavailableError."""
        ...

    def set_wake(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` (cheap, thread-safe, never blocking) whenever a Job of nightwatch may
        have changed (a watch event, a local process exiting), so the sync runs at once rather
        than at its next tick. A gateway that cannot tell may never call it (the default)."""
        return None

    def retire(self, task: Task) -> None:
        """Called once after nightwatch wrote a terminal status for the task's current attempt:
        its Job leaves the working set (Kubernetes: labelled ``nightwatch.io/done=true``, which
        the list/watch selector excludes). Best effort: a failure is logged, never raised."""
        return None

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
