"""Rows of ``task`` and ``task_event`` as domain objects, and datetimes for the columns.

Timestamps are read as the driver gives them (SQLite: text), and parsed leniently by
``utc``: a value the user's system wrote oddly becomes None instead of failing the whole page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row

from nightwatch.adapters.store.schema import task, task_event
from nightwatch.domain.model import Task, TaskEvent


def _as_text(column: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[Any]:
    return sa.type_coerce(column, sa.String).label(name)


TASK_COLUMNS = (
    task.c.id, task.c.name, task.c.namespace, task.c.info, task.c.status, task.c.user_id, task.c.message,
    _as_text(task.c.created_at, "created_at"), _as_text(task.c.updated_at, "updated_at"), task.c.attempt,
    _as_text(task.c.cancel_requested_at, "cancel_requested_at"), task.c.cancel_reason,
    _as_text(task.c.retry_at, "retry_at"), _as_text(task.c.finished_at, "finished_at"),
)
EVENT_COLUMNS = (
    task_event.c.id, task_event.c.task_id, task_event.c.attempt, _as_text(task_event.c.at, "at"),
    task_event.c.from_status, task_event.c.to_status, task_event.c.message, task_event.c.epoch,
    task_event.c.replica,
)


def text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def _optional(value: Any) -> str | None:
    return None if value is None else text(value)


def utc(value: Any) -> datetime | None:
    """A timestamp from the database as an aware UTC datetime (naive = already UTC)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:  # MySQL zero dates and other oddities the user may have written
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def naive(value: datetime | None) -> datetime | None:
    """Naive UTC for the timezone-less columns (sessions are in UTC)."""
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None)


def to_task(row: Row[Any]) -> Task:
    (id_, name, namespace, info, status, user_id, message, created_at, updated_at, attempt, cancel_requested_at,
     cancel_reason, retry_at, finished_at) = row
    return Task(
        id=int(id_), name=text(name), namespace=text(namespace), info=text(info), status=text(status),
        user_id=int(user_id or 0), message=_optional(message), created_at=utc(created_at),
        updated_at=utc(updated_at), attempt=int(attempt if attempt is not None else 1),
        cancel_requested_at=utc(cancel_requested_at), cancel_reason=_optional(cancel_reason),
        retry_at=utc(retry_at), finished_at=utc(finished_at),
    )


def to_event(row: Row[Any]) -> TaskEvent:
    id_, task_id, attempt, at, from_status, to_status, message, epoch, replica = row
    return TaskEvent(
        task_id=int(task_id), attempt=int(attempt), at=utc(at), from_status=text(from_status),
        to_status=text(to_status), message=_optional(message), epoch=None if epoch is None else int(epoch),
        replica=text(replica), id=int(id_),
    )
