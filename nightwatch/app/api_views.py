"""Tasks and their events as the API's JSON: times in ISO 8601 (UTC), durations in seconds."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from nightwatch.domain.model import TERMINAL, Task, TaskEvent, TaskStatus


def iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def _spec(info: str) -> Any:
    try:
        spec = json.loads(info)
    except ValueError:
        return None
    return spec if isinstance(spec, dict) else None


def task_json(t: Task) -> dict[str, Any]:
    return {
        "id": t.id, "name": t.name, "namespace": t.namespace, "status": t.status, "user_id": t.user_id,
        "message": t.message, "attempt": t.attempt, "job_name": t.job_name, "info": t.info, "spec": _spec(t.info),
        "created_at": iso(t.created_at), "updated_at": iso(t.updated_at), "finished_at": iso(t.finished_at),
        "retry_at": iso(t.retry_at), "cancel_requested_at": iso(t.cancel_requested_at),
        "cancel_reason": t.cancel_reason,
    }


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 3)


def _finished(status: str) -> bool:
    return status in {str(s) for s in TERMINAL}


def events_json(task: Task, events: Sequence[TaskEvent], now: datetime) -> list[dict[str, Any]]:
    """Each event with ``duration``: how long the task stayed in ``to`` (until the next event,
    or until now while it still is; None for a terminal status)."""
    out = []
    for i, e in enumerate(events):
        end = events[i + 1].at if i + 1 < len(events) else (None if _finished(e.to_status) else now)
        out.append({"id": e.id, "attempt": e.attempt, "at": iso(e.at), "from": e.from_status, "to": e.to_status,
                    "message": e.message, "epoch": e.epoch, "replica": e.replica, "duration": _seconds(e.at, end)})
    return out


def attempts_json(task: Task, events: Sequence[TaskEvent], now: datetime) -> list[dict[str, Any]]:
    """One entry per attempt seen in the events (and the current one): when it started (left
    Normal), when it ended, its last status, its duration."""
    attempts: dict[int, dict[str, Any]] = {}
    for e in events:
        a = attempts.setdefault(e.attempt, {"attempt": e.attempt, "status": None, "started_at": None,
                                            "finished_at": None, "message": None})
        if e.to_status == TaskStatus.NORMAL:  # a requeue: the event opens this attempt
            continue
        if a["started_at"] is None and e.from_status == TaskStatus.NORMAL:
            a["started_at"] = e.at
        a["status"], a["message"] = e.to_status, e.message
        if _finished(e.to_status):
            a["finished_at"] = e.at
    current = attempts.setdefault(task.attempt, {"attempt": task.attempt, "status": None, "started_at": None,
                                                 "finished_at": None, "message": None})
    current["status"], current["message"] = task.status, task.message
    if _finished(task.status) and current["finished_at"] is None:
        current["finished_at"] = task.finished_at
    out = []
    for n in sorted(attempts):
        a = attempts[n]
        end = a["finished_at"] or (now if a["started_at"] is not None else None)
        out.append({**a, "started_at": iso(a["started_at"]), "finished_at": iso(a["finished_at"]),
                    "duration": _seconds(a["started_at"], end)})
    return out


def task_detail(task: Task, events: Sequence[TaskEvent], now: datetime) -> dict[str, Any]:
    return {**task_json(task), "events": events_json(task, events, now),
            "attempts": attempts_json(task, events, now)}
