"""The task watcher's status writes and the lifecycle decisions around them: cancel
requests, the user's reset of a finished task, and automatic retries of a failed Job.

Every write is a compare-and-set on the status and the attempt, fenced by the run's term;
the store records its event in the same statement or transaction (a lost or fenced write
records none).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from nightwatch.app.metrics import Metrics
from nightwatch.domain.errors import FencedError, InvalidTaskSpecError, TaskNotFoundError
from nightwatch.domain.jobspec import parse_info
from nightwatch.domain.model import JobPhase, JobState, Task, TaskStatus
from nightwatch.domain.ports import Clock, JobGateway, RunContext, TaskStore
from nightwatch.domain.retry import RetryPolicy, format_delay

logger = logging.getLogger("nightwatch.app.task_watcher")


def aware(at: datetime) -> datetime:
    """A timestamp read back from a store: naive ones are UTC (how nightwatch writes them)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class TaskLifecycle:
    def __init__(self, store: TaskStore, gateway: JobGateway, clock: Clock, metrics: Metrics, *,
                 retries: int = 0, retry_policy: RetryPolicy | None = None) -> None:
        self._store = store
        self._gateway = gateway
        self._clock = clock
        self._metrics = metrics
        self._retries = retries
        self._policy = retry_policy or RetryPolicy()

    # -- before a launch ----------------------------------------------------------------------

    def ready(self, task: Task, ctx: RunContext) -> Task | None:
        """The ``Normal`` task to launch now, or None: it was cancelled, it waits for its
        ``retry_at``, or someone else moved it. A finished attempt reset to ``Normal`` (the
        user's own UPDATE) first becomes the next attempt: it is never adopted."""
        if task.finished_at is not None:
            requested = task.cancel_requested_at
            if requested is not None and aware(requested) > aware(task.finished_at):
                # asked after the reset: a new request. No gateway call: the only Job of this
                # attempt is the finished one, whose logs must stay.
                self.move(task, TaskStatus.NORMAL, TaskStatus.CANCELLED,
                          f"cancelled before it started: {_reason(task)}", ctx)
                return None
            message = f"attempt {task.attempt} was reset to Normal after it finished; attempt {task.attempt + 1}"
            if not self.requeue(task, TaskStatus.NORMAL, message, ctx):
                return None
            try:
                task = self._store.get(task.id)
            except TaskNotFoundError:
                return None
            if task.status != TaskStatus.NORMAL:
                return None
        if task.cancel_requested_at is not None:
            self.cancel_unstarted(task, ctx)
            return None
        if task.retry_at is not None and aware(task.retry_at) > self._clock.now():
            return None  # an automatic retry's delay, kept in the table across leader changes
        return task

    def cancel_unstarted(self, task: Task, ctx: RunContext) -> None:
        """``Normal`` → ``Cancelled``. The gateway is asked to delete the attempt's Job all the
        same: a leader that died between creating it and writing ``Pending`` leaves a Job
        behind a ``Normal`` row (deleting none is not an error)."""
        self._gateway.cancel(task)
        self.move(task, TaskStatus.NORMAL, TaskStatus.CANCELLED,
                  f"cancelled before it started: {_reason(task)}", ctx)

    # -- in flight --------------------------------------------------------------------------

    @staticmethod
    def cancel_wins(task: Task, state: JobState | None) -> bool:
        """Whether a requested cancel is carried out now: not once the Job was seen succeed."""
        return task.cancel_requested_at is not None and (state is None or state.phase is not JobPhase.SUCCEEDED)

    def cancel_in_flight(self, task: Task, ctx: RunContext) -> None:
        """Delete the current attempt's Job, then ``Cancelled``. A failing delete raises
        (BackendUnavailableError) and leaves the task as it is, for the next run."""
        current = TaskStatus(task.status)
        self._gateway.cancel(task)
        self.move(task, current, TaskStatus.CANCELLED,
                  f"cancelled: {_reason(task)} (Job {task.namespace}/{task.job_name} deleted)", ctx)

    def job_failed(self, task: Task, state: JobState, ctx: RunContext) -> None:
        """``Failed`` with the Job's reason, or the next attempt after a delay when the
        failure may pass (``state.retryable``) and the task has retries left."""
        current = TaskStatus(task.status)
        reason = state.message or "the Job failed"
        if not state.retryable or task.attempt > self.retries_of(task):
            self.move(task, current, TaskStatus.FAILED, reason, ctx)
            return
        delay = self._policy.delay(task.attempt)
        message = f"attempt {task.attempt} failed: {reason}; retrying in {format_delay(delay)}"
        # Unless a cancel was asked since ``task`` was read: the next run carries that out instead.
        self.requeue(task, current, message, ctx, retry_at=self._clock.now() + timedelta(seconds=delay),
                     unless_cancelled=True)

    def retries_of(self, task: Task) -> int:
        """``info.retries``, else ``jobs.defaults.retries``."""
        try:
            own = parse_info(task.info).retries
        except InvalidTaskSpecError:  # it was valid at launch; changed since: the default
            own = None
        return self._retries if own is None else own

    # -- the writes -------------------------------------------------------------------------

    def move(self, task: Task, old: TaskStatus, new: TaskStatus, message: str | None, ctx: RunContext) -> bool:
        try:
            written = self._store.transition(task.id, old, new, message, ctx.fence, attempt=task.attempt)
        except FencedError:
            self._metrics.fenced_writes.inc()
            raise
        if written:
            self._written(task, old, new, message, ctx)
        return written

    def requeue(self, task: Task, old: TaskStatus, message: str | None, ctx: RunContext, *,
                retry_at: datetime | None = None, unless_cancelled: bool = False) -> bool:
        try:
            written = self._store.requeue(task.id, old, task.attempt, message, retry_at=retry_at,
                                          fence=ctx.fence, unless_cancelled=unless_cancelled)
        except FencedError:
            self._metrics.fenced_writes.inc()
            raise
        if written:
            self._written(task, old, TaskStatus.NORMAL, message, ctx)
        return written

    def _written(self, task: Task, old: TaskStatus, new: TaskStatus, message: str | None,
                 ctx: RunContext) -> None:
        self._metrics.task_transitions.labels(old.value, new.value).inc()
        logger.info(
            "task %s: %s -> %s%s", task.id, old.value, new.value, f" ({message})" if message else "",
            extra={"task_id": task.id, "from": old.value, "to": new.value, "epoch": ctx.epoch,
                   "attempt": task.attempt},
        )
        if new.terminal:  # its Job leaves the working set; best effort
            try:
                self._gateway.retire(task)
            except Exception as e:  # noqa: BLE001 - a gateway's bug must not undo a written status
                logger.warning("task %s: cannot retire its Job: %s", task.id, e, extra={"task_id": task.id})


def _reason(task: Task) -> str:
    return task.cancel_reason or "requested (no reason given)"
