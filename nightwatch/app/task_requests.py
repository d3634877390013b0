"""Submit, cancel and retry: the store calls the CLI makes, checked the same way; used by the
API and the console. Errors are the domain's (422: InvalidTaskSpecError, TaskValueError;
409: DuplicateTaskError, Conflict; 404: TaskNotFoundError; 503: BackendUnavailableError)."""

from __future__ import annotations

import json
from typing import Any

from nightwatch.domain.errors import InvalidTaskSpecError, NightwatchError
from nightwatch.domain.jobspec import spec_for
from nightwatch.domain.model import IN_FLIGHT, NewTask, Task, TaskStatus

REPLICA = "api"  # who the events of API requests name
SUBMIT_FIELDS = {"name", "namespace", "image", "command", "args", "env", "user_id"}


class Conflict(NightwatchError):
    """The request does not fit the task's state (already finished, still in flight, changed): 409."""


def cancel_task(ctx: Any, task_id: int, reason: str | None = None, replica: str = REPLICA) -> Task:
    """Ask for a cancel (the leader carries it out). Conflict when the task has finished."""
    outcome = ctx.store.request_cancel(task_id, reason or f"cancel requested through the {replica}",
                                       replica=replica)
    task: Task = outcome.task
    if not outcome.requested and task.known_status is not None and task.known_status.terminal:
        raise Conflict(f"task {task.id} has already finished ({task.status}): nothing to cancel")
    return task


def retry_task(ctx: Any, task_id: int, force: bool = False, replica: str = REPLICA) -> Task:
    """Start the next attempt of a finished task. Conflict while it has not finished."""
    store = ctx.store
    task = store.get(task_id)
    status = task.known_status
    if status is None:
        raise Conflict(f"task {task.id} has status {task.status!r}, which nightwatch does not set: not retried")
    if status in IN_FLIGHT or status is TaskStatus.NORMAL:
        raise Conflict(f"task {task.id} is {task.status}: it has not finished; cancel it first")
    if status is TaskStatus.SUCCEEDED and not force:
        raise Conflict(f"task {task.id} succeeded: retry it with force to run it again")
    if not store.requeue(task.id, status, task.attempt, f"retry of attempt {task.attempt} requested through the "
                         f"{replica}", force=force, replica=replica):
        raise Conflict(f"task {task.id} changed meanwhile (it is no longer {task.status} at attempt "
                       f"{task.attempt}): look again")
    retried: Task = store.get(task.id)
    return retried


def submit_task(ctx: Any, doc: dict[str, Any]) -> Task:
    """Validate ``doc`` (the body of POST /tasks) as ``task submit`` does and add the task.
    InvalidTaskSpecError / TaskValueError (422), DuplicateTaskError (409)."""
    added: Task = ctx.store.add(new_task(doc, ctx))
    return added


def new_task(body: dict[str, Any], ctx: Any) -> NewTask:
    """The body of ``POST /tasks`` checked as ``nightwatch task submit`` checks its arguments."""
    unknown = sorted(set(body) - SUBMIT_FIELDS)
    if unknown:
        raise InvalidTaskSpecError(f"{unknown[0]}: unknown field (known: {', '.join(sorted(SUBMIT_FIELDS))})")
    for key in ("name", "namespace", "image"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise InvalidTaskSpecError(f"{key}: required, a non-empty string")
    info: dict[str, Any] = {"image": body["image"]}
    for key in ("command", "args"):
        value = body.get(key) or []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise InvalidTaskSpecError(f"{key}: expected a list of strings")
        info[key] = value
    env = body.get("env")
    if env:
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise InvalidTaskSpecError("env: expected an object of names to string values")
        info["env"] = env
    user_id = body.get("user_id", 0)
    if isinstance(user_id, bool) or not isinstance(user_id, int):
        raise InvalidTaskSpecError("user_id: expected a whole number")
    text = json.dumps(info)
    spec_for(body["name"], body["namespace"], text, ctx.allowed_namespaces, ctx.allowed_images)
    return NewTask(body["name"], body["namespace"], text, user_id)
