"""The REST API under ``/api/v1``: JSON in and out, errors as ``{"error", "detail"}``.

Reads come from the store; submit, cancel and retry are the store calls the CLI makes
(``add``, ``request_cancel``, ``requeue``), which the leader carries out, so every replica
serves the whole API. Who may call what: ``app/auth.py``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from nightwatch.app import auth
from nightwatch.app.api_docs import openapi_document
from nightwatch.app.api_views import task_detail, task_json
from nightwatch.app.task_requests import Conflict, cancel_task, retry_task, submit_task
from nightwatch.domain.errors import (
    BackendUnavailableError,
    DuplicateTaskError,
    IllegalTransitionError,
    InvalidTaskSpecError,
    JobNotFoundError,
    TaskNotFoundError,
    TaskValueError,
    UnknownStatusError,
)
from nightwatch.domain.model import TaskQuery

MAX_LIMIT, DEFAULT_LIMIT = 500, 50
MAX_TAIL, DEFAULT_TAIL = 10_000, 100
MAX_FOLLOWERS = 16  # log streams at once per replica: each holds one of the 40 worker threads


def error_body(code: int, detail: Any) -> dict[str, str]:
    try:
        error = HTTPStatus(code).phrase.lower()
    except ValueError:
        error = "error"
    return {"error": error, "detail": str(detail)}


def _fail(code: int, detail: str, **headers: str) -> HTTPException:
    return HTTPException(code, detail, headers=headers or None)


def exception_handlers() -> dict[Any, Callable[..., Any]]:
    """The domain's errors as API answers (on every path: the console catches its own first)."""
    def answer(code: int) -> Callable[[Request, Exception], Response]:
        def handle(request: Request, exc: Exception) -> Response:
            if request.url.path.startswith("/api/"):
                return JSONResponse(error_body(code, exc), code)
            return PlainTextResponse(f"{exc}\n", code)
        return handle

    def unexpected(request: Request, exc: Exception) -> Response:  # logged by uvicorn, then re-raised
        if request.url.path.startswith("/api/"):
            return JSONResponse(error_body(500, f"unexpected error: {type(exc).__name__}"), 500)
        return PlainTextResponse("Internal Server Error\n", 500)

    return {Exception: unexpected,
            TaskNotFoundError: answer(404), JobNotFoundError: answer(404), DuplicateTaskError: answer(409),
            IllegalTransitionError: answer(409), Conflict: answer(409), InvalidTaskSpecError: answer(422),
            TaskValueError: answer(422), UnknownStatusError: answer(422), BackendUnavailableError: answer(503)}


# -- who may ------------------------------------------------------------------------------------

def require_read(request: Request) -> None:
    token = auth.bearer(request)
    if token is not None and request.app.state.ctx.auth.tokens and not auth.bearer_ok(request):
        raise _fail(401, "wrong token", **{"WWW-Authenticate": "Bearer"})
    if not auth.can_read(request):
        raise _fail(401, "reading needs a token (server.auth.read is on): send Authorization: Bearer <token>",
                    **{"WWW-Authenticate": "Bearer"})


def require_write(request: Request) -> None:
    if not auth.writes_enabled(request.app.state.ctx):
        raise _fail(403, "writes are switched off: no token is configured in server.auth.tokens")
    token = auth.bearer(request)
    if token is not None:
        if not auth.bearer_ok(request):
            raise _fail(401, "wrong token", **{"WWW-Authenticate": "Bearer"})
        return
    if auth.signed_in(request):  # a browser's session: the CSRF token must come along
        auth.check_csrf(request, request.headers.get(auth.CSRF_HEADER))
        return
    raise _fail(401, "writing needs a token: send Authorization: Bearer <token>", **{"WWW-Authenticate": "Bearer"})


# -- parameters -------------------------------------------------------------------------------

def _int(request: Request, name: str, default: int | None, low: int, high: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _fail(400, f"{name}: expected a whole number, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        raise _fail(400, f"{name}: must be from {low} to {high}, got {value}" if high is not None
                    else f"{name}: must be at least {low}, got {value}")
    return value


def _since(request: Request) -> datetime | None:
    raw = request.query_params.get("since")
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(400, f"since: expected an ISO 8601 time (like 2026-01-31T12:00:00Z), got {raw!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def task_query(request: Request) -> TaskQuery:
    statuses = tuple(s for raw in request.query_params.getlist("status") for s in raw.split(",") if s)
    cursor = _int(request, "cursor", None, 1)
    return TaskQuery(statuses=statuses, namespace=request.query_params.get("namespace") or None,
                     name=request.query_params.get("name") or None, user_id=_int(request, "user_id", None, 0),
                     since=_since(request), before_id=cursor,
                     limit=_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT) or DEFAULT_LIMIT)


async def _json_body(request: Request, required: bool = True) -> dict[str, Any]:
    body = await request.body()
    if not body.strip():
        if required:
            raise _fail(400, "expected a JSON object in the request body")
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise _fail(400, f"the request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise _fail(400, f"expected a JSON object in the request body, got a {type(data).__name__}")
    return data


def _task_id(request: Request) -> int:
    raw = request.path_params["task_id"]
    try:
        return int(raw)
    except ValueError:
        raise _fail(404, f"no task with id {raw!r}") from None


# -- the endpoints ------------------------------------------------------------------------------

def routes(ctx: Any) -> list[BaseRoute]:
    store = ctx.store
    followers = threading.BoundedSemaphore(MAX_FOLLOWERS)

    def list_tasks(request: Request) -> Response:
        require_read(request)
        q = task_query(request)
        rows = store.query(TaskQuery(**{**q.__dict__, "limit": q.limit + 1}))  # one more: is there a next page
        page, more = rows[: q.limit], len(rows) > q.limit
        total = store.count(TaskQuery(**{**q.__dict__, "before_id": None}))
        return JSONResponse({
            "tasks": [task_json(t) for t in page],
            "next_cursor": str(page[-1].id) if more and page else None,
            "total": total,
            "counts": store.count_by_status(),
        })

    def get_task(request: Request) -> Response:
        require_read(request)
        task = store.get(_task_id(request))
        return JSONResponse(task_detail(task, store.events(task.id), ctx.clock.now()))

    async def submit(request: Request) -> Response:
        require_write(request)
        task = await run_in_threadpool(submit_task, ctx, await _json_body(request))
        return JSONResponse(task_json(task), 201, headers={"Location": f"/api/v1/tasks/{task.id}"})

    async def cancel(request: Request) -> Response:
        require_write(request)
        body = await _json_body(request, required=False)
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise _fail(422, "reason: expected a string")
        task = await run_in_threadpool(cancel_task, ctx, _task_id(request), reason)
        return JSONResponse({**task_json(task), "cancel_requested": True}, 202)

    async def retry(request: Request) -> Response:
        require_write(request)
        body = await _json_body(request, required=False)
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise _fail(422, "force: expected true or false")
        return JSONResponse(task_json(await run_in_threadpool(retry_task, ctx, _task_id(request), force)))

    def logs(request: Request) -> Response:
        require_read(request)
        task = store.get(_task_id(request))
        tail = _int(request, "tail", DEFAULT_TAIL, 0, MAX_TAIL)
        follow = request.query_params.get("follow", "") in ("1", "true", "yes")
        if ctx.gateway is None:
            raise _fail(503, "this server has no job backend to read logs from")
        if not follow:
            lines = ctx.gateway.logs(task, tail=tail, follow=False)
            return PlainTextResponse("".join(f"{line}\n" for line in lines))
        list(ctx.gateway.logs(task, tail=0, follow=False))  # a missing Job or log: 404 before the stream
        if not followers.acquire(blocking=False):  # each stream holds a worker thread while it waits
            raise _fail(503, f"{MAX_FOLLOWERS} logs are followed already: try again later, or without follow")
        return _Followed(ctx.gateway.logs(task, tail=tail, follow=True), followers.release)

    def cluster(request: Request) -> Response:
        require_read(request)
        from nightwatch.app.cluster import cluster_view

        return JSONResponse(cluster_view(ctx))

    def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(ctx.version))

    return [
        Route("/tasks", list_tasks, methods=["GET"]),
        Route("/tasks", submit, methods=["POST"]),
        Route("/tasks/{task_id}", get_task, methods=["GET"]),
        Route("/tasks/{task_id}/cancel", cancel, methods=["POST"]),
        Route("/tasks/{task_id}/retry", retry, methods=["POST"]),
        Route("/tasks/{task_id}/logs", logs, methods=["GET"]),
        Route("/cluster", cluster, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]


class _Followed(StreamingResponse):
    """A followed log; ``release`` runs once the response is over, however it ends (the Job
    ended, the client went away). A worker thread waiting in the gateway for the next line
    is let go when that line comes or the Job ends."""

    def __init__(self, lines: Iterator[str], release: Callable[[], None]) -> None:
        super().__init__((f"{line}\n" for line in lines), media_type="text/plain; charset=utf-8",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
