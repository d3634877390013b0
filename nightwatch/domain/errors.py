"""One error hierarchy. Adapters translate driver errors into these at the boundary."""

from __future__ import annotations


class NightwatchError(Exception):
    """Root of every error nightwatch raises on purpose."""


class ConfigError(NightwatchError):
    """The configuration is wrong; the message names the key and what is allowed."""


class InvalidTaskSpecError(NightwatchError, ValueError):
    """A task's ``info`` (or name, namespace, image) cannot become a Job. Permanent."""


class UnknownStatusError(NightwatchError, ValueError):
    def __init__(self, status: str) -> None:
        super().__init__(f"unknown task status {status!r}")
        self.status = status


class IllegalTransitionError(NightwatchError):
    def __init__(self, current: str, new: str) -> None:
        super().__init__(f"a task cannot move from {current} to {new}")
        self.current = current
        self.new = new


class TaskNotFoundError(NightwatchError, KeyError):
    """``task_id``: the id asked for, or a description such as ``'x' in namespace 'y'``."""

    def __init__(self, task_id: int | str) -> None:
        super().__init__(f"no task with id {task_id}" if isinstance(task_id, int) else f"no task {task_id}")
        self.task_id = task_id

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateTaskError(NightwatchError):
    """A task with this (name, namespace) already exists."""


class TaskIdConflictError(NightwatchError):
    """The id the database handed out is already taken: its id sequence is behind rows
    that were inserted with explicit ids. Not a name clash; retrying will not help by itself."""


class TaskValueError(NightwatchError, ValueError):
    """A value does not fit its column (too long, or out of range); names column and limit."""


class BackendUnavailableError(NightwatchError):
    """Transient I/O failure of a backend (database, Redis, API server). Retry later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LockTimeoutError(BackendUnavailableError):
    """A schema migration gave up waiting for a table lock another session holds: retried later,
    backing off, so the user's writes are not queued behind each attempt."""


class JobForbiddenError(BackendUnavailableError):
    """The job backend forbids launching in this namespace for now (an access rule that may
    still be catching up with a config change). Retried with backoff, but not an outage: the
    backend has warned once for the namespace and fails the task (JobRejectedError) only
    after its grace period."""

    def __init__(self, message: str, namespace: str) -> None:
        super().__init__(message)
        self.namespace = namespace


class JobRejectedError(NightwatchError):
    """The job backend refused the Job for good (bad name, missing namespace, forbidden)."""


class JobConflictError(JobRejectedError):
    """A Job with this name exists and was not created for this task."""


class JobNotFoundError(NightwatchError):
    """The task's current attempt has no Job (or no log) to show."""


class LeadershipLostError(NightwatchError):
    """The lock is no longer ours (missing or foreign key on renew)."""


class FencedError(NightwatchError):
    """A write was refused because a newer leadership term (epoch) exists."""

    def __init__(self, name: str, epoch: int) -> None:
        super().__init__(f"write refused: epoch {epoch} of {name!r} is no longer current")
        self.name = name
        self.epoch = epoch
