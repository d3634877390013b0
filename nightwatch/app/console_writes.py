"""The console's POST forms: submit, cancel, retry, sign in and out.

Each checks that writes are on and the browser may write (a signed-in session or a bearer
token), then the form's CSRF token, then makes the same store call as the CLI and the API (``task_requests``). Success
redirects (303) to a page that names what happened through a fixed ``done`` key, so no
submitted text is ever reflected in a URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from nightwatch.app import auth, console_views, task_requests
from nightwatch.domain.errors import DuplicateTaskError, InvalidTaskSpecError, TaskIdConflictError, TaskValueError

if TYPE_CHECKING:
    from nightwatch.app.console import Console

REPLICA = "console"  # who the store's events name for the console's requests

NOTICES = {
    "submitted": "Task submitted: the leader launches it shortly.",
    "cancel": "Cancel requested: the leader carries it out shortly.",
    "retry": "Retry requested: the next attempt starts shortly.",
    "signed-in": "Signed in.",
    "signed-out": "Signed out.",
}


def notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("done", ""))


def _done(path: str, key: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?done={key}", 303)


async def _writable_form(console: Console, request: Request, back: str) -> dict[str, str] | Response:
    """The posted form once the caller may write and its CSRF token checks; else the answer."""
    if not auth.writes_enabled(console.ctx):
        return console.error(request, 403, "writes are switched off: no token is configured (server.auth.tokens)")
    if not auth.can_write(request):
        return RedirectResponse("/login?" + urlencode({"next": back}), 303)
    form = await request.form()
    values = {key: value for key, value in form.items() if isinstance(value, str)}
    auth.check_csrf(request, values.get("csrf", ""))  # HTTPException(403): the guard renders it
    return values


async def submit(console: Console, request: Request) -> Response:
    form = await _writable_form(console, request, "/submit")
    if isinstance(form, Response):
        return form
    values = console_views.form_values(form)
    try:
        doc = console_views.submit_doc(values)
        task = await run_in_threadpool(task_requests.submit_task, console.ctx, doc)
    except (InvalidTaskSpecError, TaskValueError) as e:
        return _form_again(console, request, values, 422, str(e))
    except (DuplicateTaskError, TaskIdConflictError) as e:
        return _form_again(console, request, values, 409, str(e))
    return _done(f"/tasks/{task.id}", "submitted")


def _form_again(console: Console, request: Request, values: dict[str, str], code: int, problem: str) -> Response:
    data = console.data
    return console.page(request, "submit.html", code, values=values, problem=problem,
                        namespaces=sorted(data.allowed_namespaces), images=sorted(data.allowed_images))


async def cancel(console: Console, request: Request) -> Response:
    task_id = request.path_params["id"]
    form = await _writable_form(console, request, f"/tasks/{task_id}")
    if isinstance(form, Response):
        return form
    reason = (form.get("reason") or "").strip()[:200] or "requested in the web console"
    try:
        await run_in_threadpool(task_requests.cancel_task, console.ctx, task_id, reason, REPLICA)
    except task_requests.Conflict as e:
        return await _task_again(console, request, task_id, str(e))
    return _done(f"/tasks/{task_id}", "cancel")


async def retry(console: Console, request: Request) -> Response:
    task_id = request.path_params["id"]
    form = await _writable_form(console, request, f"/tasks/{task_id}")
    if isinstance(form, Response):
        return form
    try:
        await run_in_threadpool(task_requests.retry_task, console.ctx, task_id, form.get("force") == "1", REPLICA)
    except task_requests.Conflict as e:
        return await _task_again(console, request, task_id, str(e))
    return _done(f"/tasks/{task_id}", "retry")


async def _task_again(console: Console, request: Request, task_id: int, problem: str) -> Response:
    """The task page as it is now, with why the request was refused (409)."""
    view = await run_in_threadpool(console.data.task_view, task_id)
    return console.page(request, "task.html", 409, problem=problem, **view)


async def login(console: Console, request: Request) -> Response:
    form = await request.form()
    values: dict[str, Any] = {key: value for key, value in form.items() if isinstance(value, str)}
    target = safe_next(values.get("next"))
    auth.check_csrf(request, values.get("csrf", ""))
    if not auth.sign_in(request, values.get("token", "")):
        return console.page(request, "login.html", 401, next=target, problem="That token is not valid.")
    return RedirectResponse(target if target != "/" else "/?done=signed-in", 303)


async def logout(console: Console, request: Request) -> Response:
    form = await request.form()
    auth.check_csrf(request, str(form.get("csrf", "")))
    auth.sign_out(request)
    return _done("/login", "signed-out")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this site only (never ``//host`` or a URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
