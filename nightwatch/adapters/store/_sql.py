"""What the SQL stores share: the schema version, the task columns, row -> Task."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from nightwatch.domain.errors import DuplicateTaskError
from nightwatch.domain.model import NewTask, Task

# Bump when a migration step is added; every step stays idempotent so a table the
# user created by hand (the seed's DDL) is upgraded in place.
SCHEMA_VERSION = 1
SCHEMA_DESCRIPTION = "index on task.status, nullable task.message, nightwatch_leader epochs"

INDEX_NAME = "idx_task_status"
MIGRATE_LOCK = "nightwatch_migrate"

# The order row_to_task expects.
COLUMNS = "id, name, namespace, info, status, user_id, message, created_at, updated_at"


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


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def row_to_task(row: Sequence[Any]) -> Task:
    id_, name, namespace, info, status, user_id, message, created_at, updated_at = row
    return Task(
        id=int(id_),
        name=_text(name),
        namespace=_text(namespace),
        info=_text(info),
        status=_text(status),
        user_id=int(user_id or 0),
        message=None if message is None else _text(message),
        created_at=utc(created_at),
        updated_at=utc(updated_at),
    )


def placeholders(count: int, mark: str = "%s") -> str:
    return ", ".join([mark] * count)


def status_filter(statuses: Sequence[str] | None, mark: str = "%s") -> tuple[str, list[str]]:
    """The ``status IN (...) AND`` part of a page query and its parameters."""
    if statuses is None:
        return "", []
    wanted = [str(s) for s in statuses]
    return f"status IN ({placeholders(len(wanted), mark)}) AND ", wanted


def duplicate(task: NewTask) -> DuplicateTaskError:
    return DuplicateTaskError(f"a task named {task.name!r} already exists in {task.namespace!r}")
