"""The web console: server-rendered pages over the same TaskStore port the CLI uses.

Reads come from the store on whichever replica serves the page; submit, cancel and retry are
the CLI's store calls (``add`` after ``spec_for`` with the allow-lists, ``request_cancel``,
``requeue`` with replica ``"console"``), carried out by the leader. Every value reaches the
page through Jinja2 with autoescape on; the JavaScript in ``static/console.js`` only polls
the small JSON routes below and sets text, or HTML the server rendered and escaped.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from nightwatch import __version__
from nightwatch.app import auth, console_views, console_writes
from nightwatch.app.console_data import ConsoleData
from nightwatch.domain.errors import BackendUnavailableError, NightwatchError, TaskNotFoundError
from nightwatch.domain.model import TaskQuery, TaskStatus

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
LIVE_IDS_MAX = 200  # ids one live-update call may ask about (a page shows PAGE_SIZE)
LOG_TAIL = 200  # lines of a task's log the page shows and follows
LOG_TAIL_MAX = 5000
FILTER_MAX = 45  # the widest filtered column (name, namespace, status: VARCHAR(45))

Endpoint = Callable[[Request], Awaitable[Response]]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("nightwatch.app", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=console_views.when, iso=console_views.iso, duration=console_views.duration)
    env.globals.update(statuses=list(TaskStatus), version=__version__, is_terminal=console_views.is_terminal)
    return env


class Console:
    """The console's request handlers, bound to the server's context (``WebContext``)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.data = ConsoleData(ctx)
        self.templates = Jinja2Templates(env=_environment())

    # -- rendering --

    def common(self, request: Request) -> dict[str, Any]:
        writes = auth.writes_enabled(self.ctx)
        return {"request": request, "root": request.scope.get("root_path", ""), "writes": writes,
                "can_write": writes and auth.can_write(request), "csrf": auth.csrf_token(request),
                "identity": self.data.identity, "notice": console_writes.notice(request), "problem": None}

    def page(self, request: Request, name: str, status_code: int = 200, **values: Any) -> Response:
        response = self.templates.TemplateResponse(request, name, {**self.common(request), **values},
                                                   status_code=status_code)
        response.headers.update(_SECURITY_HEADERS)
        return response

    def fragment(self, request: Request, name: str, **values: Any) -> str:
        return self.templates.get_template(name).render({**self.common(request), **values})

    def error(self, request: Request, status_code: int, message: str) -> Response:
        return self.page(request, "error.html", status_code, message=message, code=status_code)

    # -- the task list --

    async def tasks(self, request: Request) -> Response:
        q, filters = _query(request)
        listing = await run_in_threadpool(self.data.listing, q)
        older = None
        if listing.more:
            older = "?" + urlencode({**filters, "before": listing.tasks[-1].id})
        return self.page(request, "tasks.html", tasks=listing.tasks, counts=listing.counts, filters=filters,
                         older=older, newest="?" + urlencode(filters) if q.before_id else None,
                         top=listing.tasks[0].id if listing.tasks else 0, paged=q.before_id is not None)

    async def live(self, request: Request) -> Response:
        """Statuses of the rows a list page shows (``ids``), the rows newer than its ``top``, and
        with ``counts=1`` the tasks per status."""
        ids = _ids(request.query_params.get("ids", ""))
        q, _ = _query(request)
        top = _int(request.query_params.get("top")) or 0
        counts = request.query_params.get("counts") == "1"  # the page asks now and then: a GROUP BY
        rows, new, totals = await run_in_threadpool(self.data.live, ids, q, top, counts)
        new_html = "".join(self.fragment(request, "_row.html", task=t) for t in new)
        return JSONResponse({"tasks": [_brief(t) for t in rows], "new_rows": new_html,
                             "top": max([top, *(t.id for t in new)]), "counts": totals}, headers=_NO_STORE)

    # -- one task --

    async def task(self, request: Request) -> Response:
        view = await run_in_threadpool(self.data.task_view, request.path_params["id"])
        return self.page(request, "task.html", **view)

    async def task_live(self, request: Request) -> Response:
        view = await run_in_threadpool(self.data.task_view, request.path_params["id"])
        parts = {part: self.fragment(request, f"_{part}.html", **view)
                 for part in ("summary", "events", "attempts", "actions")}
        task = view["task"]
        return JSONResponse({"status": task.status, "terminal": console_views.is_terminal(task.status),
                             "version": view["task_version"], "html": parts}, headers=_NO_STORE)

    async def task_log(self, request: Request) -> Response:
        tail = min(_int(request.query_params.get("tail")) or LOG_TAIL, LOG_TAIL_MAX)
        text, available = await run_in_threadpool(self.data.log_tail, request.path_params["id"], tail)
        return PlainTextResponse(text, headers={**_NO_STORE, "X-Log-Available": "1" if available else "0"})

    # -- writes --

    async def submit_form(self, request: Request) -> Response:
        values = {"namespace": next(iter(sorted(self.data.allowed_namespaces)), "default")}
        return self.page(request, "submit.html", values=console_views.form_values(values), problem=None,
                         namespaces=sorted(self.data.allowed_namespaces), images=sorted(self.data.allowed_images))

    async def submit(self, request: Request) -> Response:
        return await console_writes.submit(self, request)

    async def cancel(self, request: Request) -> Response:
        return await console_writes.cancel(self, request)

    async def retry(self, request: Request) -> Response:
        return await console_writes.retry(self, request)

    # -- cluster and sign-in --

    async def cluster(self, request: Request) -> Response:
        doc = await run_in_threadpool(self.data.cluster)
        return self.page(request, "cluster.html", cluster=doc)

    async def login_form(self, request: Request) -> Response:
        target = console_writes.safe_next(request.query_params.get("next"))
        return self.page(request, "login.html", next=target)

    async def login(self, request: Request) -> Response:
        return await console_writes.login(self, request)

    async def logout_form(self, request: Request) -> Response:
        return self.page(request, "logout.html")

    async def logout(self, request: Request) -> Response:
        return await console_writes.logout(self, request)


# The pages load only their own script and stylesheet and post only to this site (the server
# adds nosniff, X-Frame-Options and Referrer-Policy to every answer: web_middleware.py).
_SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                                "frame-ancestors 'none'; form-action 'self'"}
_NO_STORE = {"Cache-Control": "no-store"}


def _guard(console: Console, handler: Endpoint, *, json_errors: bool = False, public: bool = False) -> Endpoint:
    """Read auth (sign-in page, or 401 for the JSON routes) and the one-line error pages."""

    @functools.wraps(handler)
    async def guarded(request: Request) -> Response:
        if not public and not auth.can_read(request):
            if json_errors:
                return JSONResponse({"error": "unauthorized", "detail": "sign in first"}, 401)
            return RedirectResponse("/login?" + urlencode({"next": _here(request)}), 303)
        try:
            return await handler(request)
        except TaskNotFoundError as e:
            return _failure(console, request, 404, str(e), json_errors)
        except BackendUnavailableError as e:
            return _failure(console, request, 503, f"backend unavailable: {e}", json_errors)
        except HTTPException as e:
            return _failure(console, request, e.status_code, str(e.detail), json_errors)
        except NightwatchError as e:
            logger.warning("console: %s %s: %s", request.method, request.url.path, e)
            return _failure(console, request, 500, str(e), json_errors)

    return guarded


def _failure(console: Console, request: Request, code: int, message: str, as_json: bool) -> Response:
    if as_json:
        return JSONResponse({"error": "console", "detail": message}, code)
    return console.error(request, code, message)


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None and text.strip() else None
    except ValueError:
        return None


def _ids(text: str) -> list[int]:
    out = []
    for part in text.split(",")[:LIVE_IDS_MAX]:
        if (n := _int(part)) is not None:
            out.append(n)
    return out


def _query(request: Request) -> tuple[TaskQuery, dict[str, str]]:
    params = request.query_params
    filters = {key: params.get(key, "").strip()[:FILTER_MAX] for key in ("status", "namespace", "name")}
    filters = {key: value for key, value in filters.items() if value}
    q = TaskQuery(statuses=(filters["status"],) if "status" in filters else (),
                  namespace=filters.get("namespace"), name=filters.get("name"),
                  before_id=_int(params.get("before")), limit=PAGE_SIZE)
    return q, filters


def _brief(task: Any) -> dict[str, Any]:
    return {"id": task.id, "status": task.status, "message": task.message or "", "attempt": task.attempt,
            "updated": console_views.when(task.updated_at),
            "terminal": console_views.is_terminal(task.status),
            "cancel_requested": task.cancel_requested_at is not None}


def routes(ctx: Any) -> list[Route]:
    """The console's routes, to mount at the root of the server's app."""
    c = Console(ctx)

    def page(path: str, handler: Endpoint, methods: tuple[str, ...] = ("GET",), **kw: Any) -> Route:
        return Route(path, _guard(c, handler, **kw), methods=list(methods))

    return [
        page("/", c.tasks),
        page("/console/live", c.live, json_errors=True),
        page("/tasks/{id:int}", c.task),
        page("/tasks/{id:int}/live", c.task_live, json_errors=True),
        page("/tasks/{id:int}/log", c.task_log, json_errors=True),
        page("/tasks/{id:int}/cancel", c.cancel, ("POST",)),
        page("/tasks/{id:int}/retry", c.retry, ("POST",)),
        page("/submit", c.submit_form),
        page("/submit", c.submit, ("POST",)),
        page("/cluster", c.cluster),
        page("/login", c.login_form, public=True),
        page("/login", c.login, ("POST",), public=True),
        page("/logout", c.logout_form, public=True),
        page("/logout", c.logout, ("POST",), public=True),
    ]
