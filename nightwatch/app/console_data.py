"""The console's reads: each is one or a few TaskStore (or gateway) calls, run in a worker
thread by the page that needs it. Nothing here knows HTTP."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from nightwatch.app import console_views
from nightwatch.app.cluster import cluster_view
from nightwatch.domain.errors import BackendUnavailableError, JobNotFoundError, NightwatchError
from nightwatch.domain.model import Task, TaskQuery, TaskStatus

logger = logging.getLogger(__name__)

LOG_LINE_MAX = 10_000  # characters of one log line the page shows
LIVE_SPAN_MAX = 500  # ids one live update reads, below the newest row that left the page's filters


@dataclass(frozen=True)
class Listing:
    tasks: list[Task]
    more: bool  # an older page exists
    counts: dict[str, int]


class ConsoleData:
    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    @property
    def store(self) -> Any:
        return self.ctx.store

    @property
    def identity(self) -> str:
        return str(getattr(self.ctx, "identity", "") or "")

    @property
    def allowed_namespaces(self) -> Collection[str]:
        return tuple(getattr(self.ctx, "allowed_namespaces", None) or ())

    @property
    def allowed_images(self) -> Collection[str]:
        return tuple(getattr(self.ctx, "allowed_images", None) or ())

    def listing(self, q: TaskQuery) -> Listing:
        found = self.store.query(replace(q, limit=q.limit + 1))
        return Listing(found[: q.limit], len(found) > q.limit, self.store.count_by_status())

    def live(self, ids: list[int], q: TaskQuery, top: int,
             counts: bool = False) -> tuple[list[Task], list[Task], dict[str, int] | None]:
        wanted = set(ids)
        found: dict[int, Task] = {}
        if ids:  # one query gives the page's rows that still match its filters
            window = replace(q, before_id=max(ids) + 1, limit=len(ids))
            found = {t.id: t for t in self.store.query(window) if t.id in wanted}
        missing = [i for i in ids if i not in found]
        if missing:  # the rows that left the filters: one unfiltered query over their id range
            span = min(max(missing) - min(missing) + 1, LIVE_SPAN_MAX)  # older ones: not updated
            rows = self.store.query(TaskQuery(before_id=max(missing) + 1, limit=span))
            found.update((t.id, t) for t in rows if t.id in wanted)
        rows = [found[i] for i in ids if i in found]
        new: list[Task] = []
        if q.before_id is None:  # the first page shows tasks as they are added
            new = [t for t in self.store.query(q) if t.id > top]
        return rows, new, self.store.count_by_status() if counts else None

    def task_view(self, task_id: int) -> dict[str, Any]:
        task = self.store.get(task_id)
        events = self.store.events(task_id)
        now = self.ctx.clock.now()
        status = task.known_status
        pending_cancel = task.cancel_requested_at is not None
        return {
            "task": task,
            "spec": console_views.spec_text(task.info),
            "timeline": console_views.timeline(events, now, task),
            "attempts": console_views.attempts(task, events, now),
            "cancellable": status is not None and not status.terminal and not pending_cancel,
            "retryable": status in (TaskStatus.FAILED, TaskStatus.CANCELLED),
            "rerunnable": status is TaskStatus.SUCCEEDED,
            "pending_cancel": pending_cancel,
            "task_version": f"{task.status}|{task.attempt}|{len(events)}|{events[-1].id if events else 0}|"
                       f"{pending_cancel}|{task.message or ''}",
        }

    def log_tail(self, task_id: int, tail: int) -> tuple[str, bool]:
        """The last ``tail`` lines of the current attempt's log, and whether there is one."""
        task = self.store.get(task_id)
        tails = getattr(self.ctx, "log_tails", None)  # the gateway's, kept a second (app/log_tails.py)
        if tails is None:
            return "(this job backend gives no logs)", False
        try:
            out = [line[:LOG_LINE_MAX] for line in tails.tail(task, tail).lines]
        except JobNotFoundError as e:
            return f"(no log yet: {e})", False
        except NotImplementedError:
            return "(this job backend gives no logs)", False
        except BackendUnavailableError as e:
            return f"(the job backend is unavailable: {e})", False
        return "\n".join(out[-tail:]), True

    def cluster(self) -> dict[str, Any]:
        """What ``GET /api/v1/cluster`` answers (replicas report themselves through the store);
        when the replicas cannot be read, the leader, epoch and counts with the reason why."""
        try:
            return cluster_view(self.ctx)
        except NightwatchError as e:
            if isinstance(e, BackendUnavailableError):
                raise
            logger.warning("console: cluster view without replicas: %s", e)
            problem = str(e)
        daemon = getattr(self.ctx, "daemon", None)
        elector = getattr(daemon, "elector", None)
        lock = elector.lock if elector is not None else None
        return {"leader": lock.holder() if lock is not None else None,
                "epoch": self.store.current_epoch(lock.name) if lock is not None else None,
                "lock": lock.name if lock is not None else "", "served_by": self.identity, "replicas": [],
                "leader_changes": [], "counts": self.store.count_by_status(), "problem": problem}
