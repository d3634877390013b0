"""How the task commands print: tables, JSON/YAML documents, a task's attempts and timeline."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import yaml

from nightwatch.domain.model import Task, TaskEvent, TaskStatus

_TERMINAL = frozenset(str(s) for s in TaskStatus if s.terminal)
_PHASES = {TaskStatus.NORMAL: "waiting", TaskStatus.PENDING: "pending", TaskStatus.RUNNING: "running"}


def terminal(status: str) -> bool:
    return status in _TERMINAL


def when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def task_dict(t: Task, *, info_object: bool = False) -> dict[str, Any]:
    """The task as a document. ``info_object``: ``info`` parsed (when it is JSON), not a string."""
    d = asdict(t)
    for key, value in d.items():
        if isinstance(value, datetime):
            d[key] = value.isoformat()
    if info_object:
        with contextlib.suppress(ValueError):  # not JSON (the watcher failed it, saying why): kept as is
            d["info"] = json.loads(t.info)
    return d


def event_dict(e: TaskEvent) -> dict[str, Any]:
    d = asdict(e)
    d["at"] = when(e.at)
    return d


def duration(seconds: float | None) -> str:
    """``45s``, ``3m05s``, ``2h01m``, ``3d4h``: short and sortable by eye."""
    if seconds is None:
        return ""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns as wide as their widest cell, the last one free (messages are long)."""
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *cells]:
        head = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*head, row[-1]]).rstrip())
    return "\n".join(lines)


def _image(t: Task) -> str:
    try:
        doc = json.loads(t.info)
    except ValueError:
        return ""
    image = doc.get("image") if isinstance(doc, dict) else None
    return image if isinstance(image, str) else ""


def task_table(tasks: Sequence[Task], now: datetime, *, wide: bool = False) -> str:
    if wide:
        headers = ["ID", "NAME", "NAMESPACE", "STATUS", "ATTEMPT", "USER", "IMAGE", "CREATED", "FINISHED",
                   "CANCEL REQUESTED", "RETRY AT", "MESSAGE"]
        rows = [[t.id, t.name, t.namespace, t.status, t.attempt, t.user_id, _image(t), when(t.created_at),
                 when(t.finished_at), when(t.cancel_requested_at), when(t.retry_at), _one_line(t.message)]
                for t in tasks]
    else:
        headers = ["ID", "NAME", "NAMESPACE", "STATUS", "ATTEMPT", "AGE", "MESSAGE"]
        rows = [[t.id, t.name, t.namespace, t.status, t.attempt, _age(t.created_at, now), _one_line(t.message)]
                for t in tasks]
    return table(headers, rows)


def _age(created: datetime | None, now: datetime) -> str:
    return duration((now - created).total_seconds()) if created is not None else ""


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def documents(tasks: Sequence[Task], fmt: str) -> str:
    docs = [task_dict(t, info_object=True) for t in tasks]
    if fmt == "json":
        return json.dumps(docs, indent=2)
    return yaml.safe_dump(docs, sort_keys=False, allow_unicode=True).rstrip("\n")


# -- one task: attempts and timeline -------------------------------------------------------------

@dataclass
class Attempt:
    attempt: int
    status: str = TaskStatus.NORMAL
    started: datetime | None = None
    waiting: float = 0.0  # seconds Normal (queued, or waiting for its retry delay)
    pending: float = 0.0  # seconds Pending (Job created, nothing running yet)
    running: float = 0.0
    message: str | None = None

    def add(self, status: str, start: datetime | None, end: datetime | None) -> None:
        phase = _PHASES.get(TaskStatus(status)) if status in set(TaskStatus) else None
        if phase is not None and start is not None and end is not None:
            setattr(self, phase, getattr(self, phase) + max(0.0, (end - start).total_seconds()))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["started"] = when(self.started)
        return d


def attempts(task: Task, events: Sequence[TaskEvent], now: datetime) -> list[Attempt]:
    """Each attempt's outcome and the time it spent waiting, pending and running, from the
    events (events pruned after ``history.retention`` leave only what is left to count)."""
    first = task.attempt
    if events:  # the next-attempt move is the only one to Normal; it is counted in the new attempt
        first = events[0].attempt - 1 if events[0].to_status == TaskStatus.NORMAL else events[0].attempt
    current = Attempt(max(1, first), started=task.created_at if first <= 1 else None)
    done: list[Attempt] = []
    state, since = str(TaskStatus.NORMAL), current.started
    for e in events:
        if e.attempt != current.attempt:  # the next-attempt move closes the previous attempt
            current.add(state, since, e.at)
            if e.from_status in (TaskStatus.PENDING, TaskStatus.RUNNING):  # an automatic retry
                current.status, current.message = TaskStatus.FAILED, e.message
            elif terminal(e.from_status):  # a retry; from Normal (your UPDATE) the last event says how it ended
                current.status = e.from_status
            done.append(current)
            current = Attempt(e.attempt, started=e.at, message=e.message)
            state, since = str(TaskStatus.NORMAL), e.at
            continue
        current.add(state, since, e.at)
        state, since = e.to_status, e.at
        current.status, current.message = e.to_status, e.message
    if current.attempt == task.attempt:
        current.status, current.message = task.status, task.message
        if not terminal(task.status):
            current.add(state, since, now)  # still going: counted up to now
    done.append(current)
    return done


def fields(task: Task) -> str:
    return "\n".join(f"{key:19} {'' if value is None else value}" for key, value in task_dict(task).items())


def task_detail(task: Task, events: Sequence[TaskEvent], now: datetime) -> str:
    lines = [fields(task)]
    rows = [[a.attempt, a.status, when(a.started), duration(a.waiting), duration(a.pending),
             duration(a.running), _one_line(a.message)] for a in attempts(task, events, now)]
    lines += ["", "Attempts:", _indent(table(
        ["ATTEMPT", "STATUS", "STARTED", "WAITING", "PENDING", "RUNNING", "MESSAGE"], rows))]
    lines += ["", "Events:", _indent(timeline(events, now, task)) if events else "  (none)"]
    return "\n".join(lines)


def timeline(events: Sequence[TaskEvent], now: datetime, task: Task | None = None) -> str:
    """One line per event; FOR is how long the task stayed in the status it moved to."""
    rows = []
    for i, e in enumerate(events):
        end = events[i + 1].at if i + 1 < len(events) else None
        ongoing = end is None and task is not None and not terminal(task.status)
        stayed = (end or now) - e.at if e.at is not None and (end is not None or ongoing) else None
        for_ = duration(stayed.total_seconds()) if stayed is not None else ""
        rows.append([when(e.at), e.attempt, f"{e.from_status} → {e.to_status}", for_ + (" so far" if ongoing else ""),
                     "" if e.epoch is None else e.epoch, e.replica, _one_line(e.message)])
    return table(["TIME", "ATTEMPT", "FROM → TO", "FOR", "EPOCH", "REPLICA", "MESSAGE"], rows)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
