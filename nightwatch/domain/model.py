"""Tasks, their status and the state machine that governs it."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from nightwatch.domain.errors import IllegalTransitionError, TaskValueError, UnknownStatusError


class TaskStatus(enum.StrEnum):
    NORMAL = "Normal"  # waiting to be launched
    PENDING = "Pending"  # Job created, no pod running yet
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"  # terminal: cancelled on request, its Job (if any) deleted

    @classmethod
    def parse(cls, value: str) -> TaskStatus:
        try:
            return cls(value)
        except ValueError:
            raise UnknownStatusError(value) from None

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})
IN_FLIGHT = (TaskStatus.PENDING, TaskStatus.RUNNING)

# The whole state machine within one attempt. Terminal states never change; nothing moves
# backwards. Starting the next attempt is a separate move (``can_requeue``).
ALLOWED_TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.NORMAL: frozenset({TaskStatus.PENDING, TaskStatus.FAILED, TaskStatus.CANCELLED}),
    TaskStatus.PENDING: frozenset(
        {TaskStatus.RUNNING, TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED}
    ),
    TaskStatus.RUNNING: frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED}),
    TaskStatus.SUCCEEDED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}

# The next-attempt move: attempt + 1, back to ``Normal``. From ``Failed`` or ``Cancelled``
# (a retry), from ``Succeeded`` only when forced; from an in-flight status when its Job
# failed and retries are left (automatic retry); from ``Normal`` when the user's system
# reset a finished task to ``Normal`` itself (treated as a retry, never as adoption).
REQUEUE_FROM = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.PENDING, TaskStatus.RUNNING,
                          TaskStatus.NORMAL})


def can_transition(current: TaskStatus, new: TaskStatus) -> bool:
    return new in ALLOWED_TRANSITIONS[current]


def check_transition(current: str, new: str) -> None:
    """Raise unless ``current -> new`` is an allowed move (unknown statuses never are)."""
    if not can_transition(TaskStatus.parse(current), TaskStatus.parse(new)):
        raise IllegalTransitionError(current, new)


def can_requeue(current: TaskStatus, *, force: bool = False) -> bool:
    """Whether the next attempt may start from ``current`` (``Succeeded`` needs ``force``)."""
    return current in REQUEUE_FROM or (force and current is TaskStatus.SUCCEEDED)


def check_requeue(current: str, *, force: bool = False) -> None:
    if not can_requeue(TaskStatus.parse(current), force=force):
        raise IllegalTransitionError(current, TaskStatus.NORMAL)


class JobPhase(enum.StrEnum):
    """What the job backend says about a task's Job."""

    PENDING = "Pending"  # created (or suspended), nothing running yet
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"  # the backend could not be asked this time (e.g. its listing failed)


@dataclass(frozen=True)
class JobState:
    phase: JobPhase
    message: str = ""  # for FAILED: the reason, e.g. "exit code 3: oops"
    # for FAILED: whether running it again may help (non-zero exit, deadline, eviction, a
    # lost node). False for what a retry cannot fix, e.g. an image that cannot be pulled.
    retryable: bool = True


_PHASE_TARGET = {
    JobPhase.PENDING: TaskStatus.PENDING,
    JobPhase.RUNNING: TaskStatus.RUNNING,
    JobPhase.SUCCEEDED: TaskStatus.SUCCEEDED,
    JobPhase.FAILED: TaskStatus.FAILED,
}


def next_status(current: TaskStatus, observed: JobState) -> TaskStatus | None:
    """The status a task moves to after its Job was observed, or None to leave it.

    Only in-flight tasks follow their Job: a ``Normal`` task is the launcher's business
    (it adopts an existing Job), and terminal tasks never change.
    """
    if current not in IN_FLIGHT or observed.phase is JobPhase.UNKNOWN:
        return None
    target = _PHASE_TARGET[observed.phase]
    return target if can_transition(current, target) else None


@dataclass(frozen=True)
class Task:
    id: int
    name: str
    namespace: str
    info: str
    status: str  # a TaskStatus value, or whatever else the user's system wrote
    user_id: int = 0
    message: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    attempt: int = 1  # 1 for the first run; each retry starts the next
    cancel_requested_at: datetime | None = None  # set (by anyone) to ask for a cancel
    cancel_reason: str | None = None  # who asked and why, free text
    retry_at: datetime | None = None  # a Normal task is not launched before this (retry delay)
    finished_at: datetime | None = None  # when nightwatch wrote this attempt's terminal status

    @property
    def known_status(self) -> TaskStatus | None:
        try:
            return TaskStatus(self.status)
        except ValueError:
            return None

    @property
    def job_name(self) -> str:
        return job_name(self.name, self.attempt)


def job_name(task_name: str, attempt: int) -> str:
    """The deterministic Job name of one attempt: the task name for attempt 1 (the seed's
    rule), ``<prefix>-<hash>-<attempt>`` after, where ``<hash>`` is the first 8 hex digits of
    the name's SHA-256 and ``<prefix>`` the name cut so the whole is a DNS-1123 label of at
    most 63 characters. The hash keeps the next attempts of one task off another task's
    name: ``a``'s attempt 2 is not ``a-2`` (task ``a-2``'s attempt 1), and two long names
    that share a prefix do not meet either."""
    if attempt <= 1:
        return task_name
    suffix = f"-{attempt}"
    digest = hashlib.sha256(task_name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    prefix = task_name[: JOB_NAME_MAX - len(suffix) - len(digest) - 1].rstrip("-")
    return f"{prefix}-{digest}{suffix}"


JOB_NAME_MAX = 63


@dataclass(frozen=True)
class TaskEvent:
    """One transition of one task, written in the same statement or transaction as it."""

    task_id: int
    attempt: int  # the task's attempt after the transition
    at: datetime | None
    from_status: str
    to_status: str
    message: str | None = None
    epoch: int | None = None  # the leadership term that wrote it; None for a user's request
    replica: str = ""  # who wrote it: a replica's identity, or e.g. "cli"
    id: int = 0


@dataclass(frozen=True)
class TaskQuery:
    """A filtered listing, newest first, keyset-paged: ``before_id`` is the last id of the
    previous page (None for the first). Every filter is optional and they combine with AND."""

    statuses: tuple[str, ...] = ()
    namespace: str | None = None
    name: str | None = None
    user_id: int | None = None
    since: datetime | None = None  # created at or after
    before_id: int | None = None
    limit: int = 50


@dataclass(frozen=True)
class CancelRequest:
    """What ``request_cancel`` did: the task as it is now and whether this call asked."""

    task: Task
    requested: bool  # False: already finished, or a cancel was already pending


@dataclass(frozen=True)
class NewTask:
    name: str
    namespace: str
    info: str
    user_id: int = 0
    status: str = TaskStatus.NORMAL


@dataclass(frozen=True)
class Fence:
    """A leadership term: status writes succeed only while ``epoch`` is current for ``name``."""

    name: str
    epoch: int
    replica: str = ""  # the identity of the replica holding the term, recorded in events


# The widths of the task table's columns (the seed's DDL): every store refuses what does not
# fit, with the same message, instead of truncating or failing differently per database.
VARCHAR_COLUMNS = {"name": 45, "namespace": 45, "status": 45}
TEXT_BYTES = 65_535  # MySQL's TEXT (the ``message`` column), the narrowest of the four backends
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
ID_CLASH = "task id {id} is already taken: the id sequence is behind ids inserted explicitly{hint}"


def check_bigint(column: str, value: int) -> None:
    if not BIGINT_MIN <= value <= BIGINT_MAX:
        raise TaskValueError(f"task.{column}: {value} is out of range ({BIGINT_MIN} to {BIGINT_MAX})")


def check_new_task(task: NewTask) -> None:
    """TaskValueError naming the first column ``task`` does not fit."""
    for column, limit in VARCHAR_COLUMNS.items():
        value = str(getattr(task, column))
        if len(value) > limit:
            raise TaskValueError(f"task.{column}: {len(value)} characters, at most {limit} fit")
    check_bigint("user_id", task.user_id)
    size = len(task.info.encode("utf-8", "surrogatepass"))
    if size > TEXT_BYTES:  # MySQL's TEXT: refused the same way on every store, never cut
        raise TaskValueError(f"task.info: {size} bytes, at most {TEXT_BYTES} fit")


def fit_message(message: str | None) -> str | None:
    """A status message cut to what the ``message`` column holds (it is ours, not the user's)."""
    if message is None or len(message.encode("utf-8", "surrogatepass")) <= TEXT_BYTES:
        return message
    return message.encode("utf-8", "surrogatepass")[: TEXT_BYTES - 3].decode("utf-8", "ignore") + "..."
