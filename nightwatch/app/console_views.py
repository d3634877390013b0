"""What the console's pages show, computed from domain objects: the timeline of a task's events
with the time spent in each status, its attempts, its spec, and the submit form read into a
task's ``info``. No HTTP and no HTML here (the templates escape every value)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nightwatch.domain.errors import InvalidTaskSpecError
from nightwatch.domain.model import Task, TaskEvent, TaskStatus, job_name

FORM_FIELDS = ("name", "namespace", "image", "command", "args", "env", "user_id")


def when(moment: datetime | None) -> str:
    """A timestamp as the console shows it: UTC, to the second."""
    if moment is None:
        return ""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def iso(moment: datetime | None) -> str:
    """For ``<time datetime=...>``: ISO 8601, UTC."""
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def duration(seconds: float | None) -> str:
    """``850ms``, ``4.2s``, ``3m 04s``, ``2h 05m``, ``3d 04h``."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (_aware(end) - _aware(start)).total_seconds()


def is_terminal(status: str) -> bool:
    known = _known(status)
    return known is not None and known.terminal


def _known(status: str) -> TaskStatus | None:
    try:
        return TaskStatus(status)
    except ValueError:
        return None


@dataclass(frozen=True)
class TimelineRow:
    event: TaskEvent
    seconds: float | None  # time spent in ``to_status``: until the next event, or until now
    ongoing: bool  # the task is still in this status


def timeline(events: Sequence[TaskEvent], now: datetime, task: Task | None = None) -> list[TimelineRow]:
    """Each event with the time spent in the status it entered; led by the task's creation
    (the row's ``created_at``, which writes no event) while the first attempt's events are kept."""
    if task is not None and task.created_at is not None and (
            not events or (events[0].attempt == 1 and events[0].from_status == TaskStatus.NORMAL)):
        created = TaskEvent(task.id, 1, task.created_at, "", TaskStatus.NORMAL, "created")
        events = [created, *events] if events or task.status == TaskStatus.NORMAL else list(events)
    rows = []
    for i, event in enumerate(events):
        last = i == len(events) - 1
        if last and is_terminal(event.to_status):
            rows.append(TimelineRow(event, None, False))
            continue
        end = now if last else events[i + 1].at
        rows.append(TimelineRow(event, _between(event.at, end), last))
    return rows


@dataclass(frozen=True)
class AttemptRow:
    number: int
    job: str  # the Job's name for this attempt
    started: datetime | None  # its first event (created, or requeued into it)
    launched: datetime | None  # when it left Normal
    finished: datetime | None  # its terminal event
    outcome: str  # its last status
    message: str | None
    seconds: float | None  # launched (or started) to finished, or to now while it runs


def attempts(task: Task, events: Sequence[TaskEvent], now: datetime) -> list[AttemptRow]:
    """One row per attempt, newest first; the current attempt from the task row when its events
    were pruned (history.retention) or never written (a task the user inserted)."""
    by_attempt: dict[int, list[TaskEvent]] = {}
    for event in events:
        by_attempt.setdefault(event.attempt, []).append(event)
    by_attempt.setdefault(task.attempt, [])
    rows = []
    for number in sorted(by_attempt, reverse=True):
        mine = by_attempt[number]
        launched = next((e.at for e in mine if e.from_status == TaskStatus.NORMAL and e.to_status != TaskStatus.NORMAL),
                        None)
        ends = [e for e in mine if is_terminal(e.to_status)]
        finished = ends[-1].at if ends else None
        current = number == task.attempt
        outcome = task.status if current else (mine[-1].to_status if mine else "")
        message = task.message if current else (mine[-1].message if mine else None)
        if current and finished is None and task.finished_at is not None:
            finished = task.finished_at
        started = mine[0].at if mine else (task.created_at if number == 1 else None)
        begin = launched or started
        end = finished if finished is not None or not current or is_terminal(task.status) else now
        rows.append(AttemptRow(number, job_name(task.name, number), started, launched, finished,
                               outcome, message, _between(begin, end)))
    return rows


def spec_text(info: str) -> str:
    """``info`` pretty-printed when it is JSON, else as stored."""
    try:
        return json.dumps(json.loads(info), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return info


def form_values(form: Mapping[str, Any]) -> dict[str, str]:
    return {key: str(form.get(key, "") or "") for key in FORM_FIELDS}


def _lines(text: str) -> list[str]:
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def submit_doc(values: Mapping[str, str]) -> dict[str, Any]:
    """The submit form as the body ``POST /api/v1/tasks`` takes: ``command`` split as a shell
    splits words, ``args`` one argument per line (kept as typed, spaces included), ``env`` one
    ``KEY=VALUE`` per line. InvalidTaskSpecError naming the field that cannot be read."""
    try:
        command = shlex.split(values.get("command", ""))
    except ValueError as e:
        raise InvalidTaskSpecError(f"command: {e} (words are split as a shell splits them)") from None
    env: dict[str, str] = {}
    for n, line in enumerate(_lines(values.get("env", "")), start=1):
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise InvalidTaskSpecError(f"env line {n}: expected KEY=VALUE, got {line[:60]!r}")
        env[key.strip()] = value
    return {"name": values.get("name", "").strip(), "namespace": values.get("namespace", "").strip(),
            "image": values.get("image", "").strip(), "command": command, "args": _lines(values.get("args", "")),
            "env": env, "user_id": user_id_from_form(values)}


def user_id_from_form(values: Mapping[str, str]) -> int:
    text = values.get("user_id", "").strip()
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        raise InvalidTaskSpecError(f"user id: {text[:30]!r} is not a whole number") from None
