"""The task watcher: launch ``Normal`` tasks as Jobs, then follow in-flight Jobs."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from datetime import datetime
from typing import TypeVar

from nightwatch.app.launch_backoff import RETRY_BASE, RETRY_MAX, LaunchBackoff
from nightwatch.app.metrics import Metrics
from nightwatch.app.task_lifecycle import TaskLifecycle, aware
from nightwatch.domain.errors import (
    BackendUnavailableError,
    ConfigError,
    FencedError,
    InvalidTaskSpecError,
    JobForbiddenError,
    JobRejectedError,
)
from nightwatch.domain.jobspec import spec_for
from nightwatch.domain.model import IN_FLIGHT, JobPhase, Task, TaskStatus, next_status
from nightwatch.domain.ports import Clock, JobGateway, RunContext, TaskStore, Watcher
from nightwatch.domain.retry import RetryPolicy

logger = logging.getLogger(__name__)
T = TypeVar("T")
KNOWN_STATUSES = frozenset(s.value for s in TaskStatus)
UNEXPECTED_ATTEMPTS = 5  # launches of one task that may meet an unexpected error before it fails
__all__ = ["RETRY_BASE", "RETRY_MAX", "UNEXPECTED_ATTEMPTS", "TaskWatcher"]


def _waiting(task: Task, now: datetime) -> bool:
    """A ``Normal`` task whose automatic retry's delay has not run out yet."""
    return task.retry_at is not None and aware(task.retry_at) > now


class TaskWatcher(Watcher):
    def __init__(
        self,
        store: TaskStore,
        gateway: JobGateway,
        clock: Clock,
        *,
        allowed_namespaces: Collection[str],
        allowed_images: Collection[str] = (),
        batch_size: int = 500,
        concurrency: int = 16,
        missing_grace: float = 60.0,
        spec: str = "@every 2s",
        name: str = "task",
        metrics: Metrics | None = None,
        count_interval: float = 30.0,
        retries: int = 0,
        retry_policy: RetryPolicy | None = None,
        launch_per_run: int = 500,
    ) -> None:
        self.name = name
        self._launch_per_run = launch_per_run
        self.backlog = False  # the last run left Normal tasks for the next: the scheduler runs it at once
        self.spec = spec
        self._store = store
        self._gateway = gateway
        self._clock = clock
        self._allowed_namespaces = frozenset(allowed_namespaces)
        self._allowed_images = frozenset(allowed_images)
        self._batch_size = batch_size
        self._concurrency = concurrency
        self._missing_grace = missing_grace
        self._metrics = metrics or Metrics()
        self._pool: ThreadPoolExecutor | None = None
        self._guard = threading.Lock()
        self._backoff = LaunchBackoff(clock)
        self._lifecycle = TaskLifecycle(store, gateway, clock, self._metrics, retries=retries,
                                        retry_policy=retry_policy)
        self._missing_since: dict[int, float] = {}  # task id -> when its Job was first missed
        self._unknown_logged: set[str] = set()
        self._unavailable_streak = 0  # launches in a row that met an unavailable backend (_guard)
        self._count_interval = count_interval
        self._counted_at: float | None = None  # monotonic time of the last grouped count

    # -- the run ---------------------------------------------------------------------------

    def run(self, ctx: RunContext) -> None:
        self.launch(ctx)
        if not ctx.cancelled.is_set():
            self.sync(ctx)
        due = self._counted_at is None or self._clock.monotonic() - self._counted_at >= self._count_interval
        if due and not ctx.cancelled.is_set():
            self.count(ctx)
            self._counted_at = self._clock.monotonic()

    def close(self) -> None:
        """Drop the per-task calls not started; never wait for those in flight: shutdown has
        had its deadline already, and a hung call is bounded only by its request timeout."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def launch(self, ctx: RunContext) -> None:
        """``Normal`` tasks, oldest first, up to ``launch_per_run`` of them (else to the end of
        the set): cancel those asked to, start the next attempt of those reset after they
        finished, skip those backed off or waiting for their ``retry_at``, launch the rest.
        Bounded so that the sync after it writes finished Jobs back while a backlog is being
        launched; the rest is left with ``backlog`` set, and the next run comes at once."""
        now, wall = self._clock.monotonic(), self._clock.now()
        seen: set[int] = set()
        left = self._launch_per_run
        self.backlog = False
        with self._guard:
            self._unavailable_streak = 0
        for page in self._pages((TaskStatus.NORMAL,), ctx):
            # Jobs are created before the status write that fencing guards: a deposed leader
            # must not even create them, so check the term before every page of launches.
            self._check_term(ctx)
            seen.update(t.id for t in page)
            # a cancel or a reset is a store write, not a launch: never held back by the backoff
            # nor by a retry delay; tasks that only wait do not count against the run's bound
            due = [t for t in page if t.cancel_requested_at is not None or t.finished_at is not None
                   or (self._backoff.due(t.id, now) and not _waiting(t, wall))]
            if len(due) > left:
                due, self.backlog = due[:left], True
            left -= len(due)
            self._each(due, lambda t: self._prepare_and_launch(t, ctx), ctx)
            if self._backend_down():
                self.backlog = False  # the next run waits for its tick, not at once
                logger.warning("%s watcher: the job backend keeps failing; launching again next run",
                               self.name)
                return  # go on to sync instead of timing out on every remaining task
            if self.backlog or left <= 0:
                self.backlog = True  # the next page may hold more: a run at once looks
                return
        if not ctx.cancelled.is_set():  # a whole pass: forget tasks that are no longer Normal
            self._backoff.keep_only(seen)

    def sync(self, ctx: RunContext) -> None:
        """Observe every in-flight task's Job in one listing and write only what changed:
        requested cancels first (unless the Job was seen succeed), then each Job's progress;
        a failed Job is retried when it may pass and the task has retries left."""
        # One status at a time: each is an index seek on (status, id), paged in id order.
        tasks = [t for status in IN_FLIGHT for page in self._pages((status,), ctx) for t in page]
        if not tasks or ctx.cancelled.is_set():
            return
        self._check_term(ctx)
        observed = self._gateway.observe(tasks)
        now = self._clock.monotonic()
        in_flight = {t.id for t in tasks}
        self._missing_since = {k: v for k, v in self._missing_since.items() if k in in_flight}
        changes: list[tuple[Task, Callable[[], object]]] = []
        for task in tasks:
            current = TaskStatus(task.status)
            state = observed.get(task.id)
            if self._lifecycle.cancel_wins(task, state):
                changes.append((task, functools.partial(self._lifecycle.cancel_in_flight, task, ctx)))
                continue
            if state is not None and state.phase is JobPhase.UNKNOWN:
                continue  # its namespace could not be listed: neither seen nor missing
            if state is None:
                since = self._missing_since.setdefault(task.id, now)
                if now - since >= self._missing_grace:
                    message = (f"job not found: Job {task.namespace}/{task.job_name} has been missing for "
                               f"{int(now - since)}s (deleted outside nightwatch?)")
                    changes.append((task, functools.partial(
                        self._lifecycle.move, task, current, TaskStatus.FAILED, message, ctx)))
                continue
            self._missing_since.pop(task.id, None)
            new = next_status(current, state)
            if new is TaskStatus.FAILED:
                changes.append((task, functools.partial(self._lifecycle.job_failed, task, state, ctx)))
            elif new is not None:
                changes.append((task, functools.partial(self._lifecycle.move, task, current, new, None, ctx)))
        self._each([work for _, work in changes], lambda work: work(), ctx)
        for task, _ in changes:
            self._missing_since.pop(task.id, None)

    def count(self, ctx: RunContext) -> None:
        """One grouped count: the ``nightwatch_tasks`` gauge, and statuses we do not know.

        A full scan of the table, so ``run`` does it at most every ``count_interval``."""
        counts = self._store.count_by_status()
        for known in TaskStatus:
            self._metrics.tasks.labels(status=known.value).set(counts.get(known.value, 0))
        for raw, n in counts.items():
            if raw not in KNOWN_STATUSES and raw not in self._unknown_logged:
                self._unknown_logged.add(raw)
                logger.warning(
                    "%d task(s) have status %r, which nightwatch does not know; leaving them untouched",
                    n, raw,
                )

    # -- one task --------------------------------------------------------------------------

    def _prepare_and_launch(self, task: Task, ctx: RunContext) -> None:
        ready = self._lifecycle.ready(task, ctx)
        if ready is not None:
            self._launch_one(ready, ctx)

    def _launch_one(self, task: Task, ctx: RunContext) -> None:
        if self._backend_down():
            return  # the backend is down for everyone: leave the rest for the next run
        move = self._lifecycle.move
        try:
            spec = spec_for(
                task.name, task.namespace, task.info, self._allowed_namespaces, self._allowed_images
            )
            outcome = self._gateway.launch(task, spec)
        except InvalidTaskSpecError as e:
            move(task, TaskStatus.NORMAL, TaskStatus.FAILED, f"invalid task: {e}", ctx)
        except JobRejectedError as e:
            move(task, TaskStatus.NORMAL, TaskStatus.FAILED, f"job rejected: {e}", ctx)
        except JobForbiddenError as e:  # not an outage; the gateway warned once for its namespace
            self._backoff.back_off(task, e, level=logging.DEBUG)
        except BackendUnavailableError as e:
            with self._guard:  # pool threads update it concurrently
                self._unavailable_streak += 1
            self._backoff.back_off(task, e)
        except (FencedError, ConfigError):
            raise
        except Exception as e:  # a bug, met by this task only: back off, keep the others going
            self._unexpected(task, e, ctx)
        else:
            with self._guard:
                self._unavailable_streak = 0
            if move(task, TaskStatus.NORMAL, TaskStatus.PENDING, None, ctx):
                logger.info("task %s: Job %s/%s %s (attempt %d)", task.id, task.namespace, task.job_name,
                            outcome.value, task.attempt, extra={"task_id": task.id, "attempt": task.attempt})
            self._backoff.clear(task.id)

    def _backend_down(self) -> bool:
        """Whether ``concurrency`` launches in a row met an unavailable backend."""
        with self._guard:
            return self._unavailable_streak >= self._concurrency

    def _check_term(self, ctx: RunContext) -> None:
        """Raise FencedError when a newer leadership term than this run's exists."""
        if ctx.fence is None:
            return
        if self._store.current_epoch(ctx.fence.name) != ctx.fence.epoch:
            self._metrics.fenced_writes.inc()
            raise FencedError(ctx.fence.name, ctx.fence.epoch)

    def _unexpected(self, task: Task, error: Exception, ctx: RunContext) -> None:
        """Retried like a transient error, but only UNEXPECTED_ATTEMPTS times in all: then the
        task fails with the error's message, rather than being retried for ever."""
        attempts = self._backoff.unexpected(task)
        what = f"unexpected {type(error).__name__}: {error}"
        if attempts == 1:  # the traceback once, for the bug report; then one line per retry
            logger.exception("task %s: unexpected error while launching", task.id, extra={"task_id": task.id})
        if attempts < UNEXPECTED_ATTEMPTS:
            self._backoff.back_off(task, BackendUnavailableError(what))
            return
        if self._lifecycle.move(task, TaskStatus.NORMAL, TaskStatus.FAILED,
                                f"launch failed {attempts} times: {what}", ctx):
            self._backoff.clear(task.id)

    # -- plumbing --------------------------------------------------------------------------

    def _pages(self, statuses: Sequence[str], ctx: RunContext) -> Iterator[list[Task]]:
        """Keyset paging to the end of the set, so no task starves however many there are."""
        after = 0
        while not ctx.cancelled.is_set():
            page = self._store.page(statuses, after, self._batch_size)
            if not page:
                return
            yield page
            after = page[-1].id

    def _each(self, items: Sequence[T], work: Callable[[T], object], ctx: RunContext) -> None:
        """Run ``work`` over ``items`` on the bounded pool, skipping what is left once the run
        is cancelled; re-raise fencing and config errors, log other bugs."""
        if not items:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix=f"watcher-{self.name}")

        def guarded(item: T) -> object:
            if ctx.cancelled.is_set():
                return None
            return work(item)

        futures = [self._pool.submit(guarded, item) for item in items]
        fatal: FencedError | ConfigError | None = None
        unavailable: list[BackendUnavailableError] = []
        for future in futures:
            try:
                future.result()
            except (FencedError, ConfigError) as e:
                fatal = fatal or e
                ctx.cancelled.set()  # stop the rest of this run: the term or the config is over
            except BackendUnavailableError as e:
                unavailable.append(e)
            except CancelledError:  # dropped by close() at shutdown, never started
                pass
            except Exception:
                logger.exception("%s watcher: unexpected error on one task; the others go on", self.name)
        if unavailable:  # one line for an outage, not one per task
            logger.warning("%s watcher: %d task(s) not updated, backend unavailable: %s%s", self.name,
                           len(unavailable), unavailable[0], " (and more)" if len(unavailable) > 1 else "")
        if fatal is not None:
            raise fatal
