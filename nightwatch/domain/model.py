"""Tasks, their status and the state machine that governs it."""

from __future__ import annotations

import enum
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

    @classmethod
    def parse(cls, value: str) -> TaskStatus:
        try:
            return cls(value)
        except ValueError:
            raise UnknownStatusError(value) from None

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED})
IN_FLIGHT = (TaskStatus.PENDING, TaskStatus.RUNNING)

# The whole state machine. Terminal states never change; nothing moves backwards.
ALLOWED_TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.NORMAL: frozenset({TaskStatus.PENDING, TaskStatus.FAILED}),
    TaskStatus.PENDING: frozenset({TaskStatus.RUNNING, TaskStatus.SUCCEEDED, TaskStatus.FAILED}),
    TaskStatus.RUNNING: frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED}),
    TaskStatus.SUCCEEDED: frozenset(),
    TaskStatus.FAILED: frozenset(),
}


def can_transition(current: TaskStatus, new: TaskStatus) -> bool:
    return new in ALLOWED_TRANSITIONS[current]


def check_transition(current: str, new: str) -> None:
    """Raise unless ``current -> new`` is an allowed move (unknown statuses never are)."""
    if not can_transition(TaskStatus.parse(current), TaskStatus.parse(new)):
        raise IllegalTransitionError(current, new)


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
    message: str = ""  # for FAILED: the reason, e.g. "BackoffLimitExceeded: Job has reached ..."


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

    @property
    def known_status(self) -> TaskStatus | None:
        try:
            return TaskStatus(self.status)
        except ValueError:
            return None


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
