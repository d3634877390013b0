"""The console's pages and forms over real HTTP (the server of app/web.py on a free port, in
this process) with the memory store and the fake gateway: escaping, sign-in, CSRF, writes
switched off, the submit form's parsing and refusals, retry and cancel refusals, the live
routes. The browser tests (tests/browser) drive the same pages in Chromium."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from nightwatch import __version__
from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.jobs.fake import FakeJobGateway
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.app.auth import AuthSettings
from nightwatch.app.web import WebContext, start_web
from nightwatch.domain.model import NewTask, TaskStatus

TOKEN = "console-unit-token"
EVIL = "<script>alert(1)</script>"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Answer:
    code: int
    body: str
    headers: Any

    @property
    def location(self) -> str:
        return str(self.headers.get("Location", ""))


class Browser:
    """A cookie jar and no redirect following: each answer is looked at as it comes."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect)

    def get(self, path: str) -> Answer:
        return self._send(urllib.request.Request(self.base + path))

    def post(self, path: str, fields: dict[str, str]) -> Answer:
        data = urllib.parse.urlencode(fields).encode()
        return self._send(urllib.request.Request(self.base + path, data=data, method="POST"))

    def _send(self, request: urllib.request.Request) -> Answer:
        try:
            with self.opener.open(request, timeout=10) as r:
                return Answer(r.status, r.read().decode(), r.headers)
        except urllib.error.HTTPError as e:
            return Answer(e.code, e.read().decode(), e.headers)

    def csrf(self, path: str = "/submit") -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.get(path).body)
        assert found, f"no csrf field on {path}"
        return found.group(1)

    def sign_in(self, token: str = TOKEN) -> Answer:
        return self.post("/login", {"csrf": self.csrf("/login"), "token": token, "next": "/"})


@dataclass
class Served:
    url: str
    store: InMemoryTaskStore

    def browser(self) -> Browser:
        return Browser(self.url)


def _serve(auth: AuthSettings) -> Iterator[Served]:
    clock = SystemClock()
    store = InMemoryTaskStore(clock)
    ctx = WebContext(store=store, gateway=FakeJobGateway(clock), clock=clock, auth=auth, identity="unit:1",
                     allowed_namespaces=("default",), allowed_images=())
    server = start_web("127.0.0.1:0", ctx)
    host, port = server.server_address[:2]
    try:
        yield Served(f"http://{host}:{port}", store)
    finally:
        server.shutdown()


@pytest.fixture
def served() -> Iterator[Served]:
    yield from _serve(AuthSettings(tokens=(TOKEN,)))


@pytest.fixture
def read_only() -> Iterator[Served]:
    yield from _serve(AuthSettings())


@pytest.fixture
def private() -> Iterator[Served]:
    yield from _serve(AuthSettings(tokens=(TOKEN,), read=True))


def test_names_and_messages_are_escaped_on_every_page(served: Served) -> None:
    task = served.store.add(NewTask(EVIL, "default", json.dumps({"image": EVIL})))
    served.store.transition(task.id, TaskStatus.NORMAL, TaskStatus.FAILED, message=f"bad {EVIL}", replica="t")
    b = served.browser()
    for path in ("/", f"/tasks/{task.id}", f"/?name={urllib.parse.quote(EVIL)}"):
        body = b.get(path).body
        assert EVIL not in body, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body, path
        assert f"nightwatch {__version__}</footer>" in body and f"console.js?v={__version__}" in body
    live = json.loads(b.get(f"/console/live?ids={task.id}&top=0").body)
    assert EVIL not in live["new_rows"] and live["tasks"][0]["message"] == f"bad {EVIL}"  # JSON, set as text
    parts = json.loads(b.get(f"/tasks/{task.id}/live").body)["html"]
    assert all(EVIL not in html for html in parts.values())


def test_a_form_post_needs_the_sessions_csrf_token(served: Served) -> None:
    task = served.store.add(NewTask("job", "default", '{"image": "x"}'))
    b = served.browser()
    assert b.sign_in().code == 303
    refused = b.post(f"/tasks/{task.id}/cancel", {"csrf": "forged"})
    assert refused.code == 403 and "CSRF" in refused.body
    assert served.store.get(task.id).cancel_requested_at is None
    done = b.post(f"/tasks/{task.id}/cancel", {"csrf": b.csrf(f"/tasks/{task.id}")})
    assert done.code == 303 and done.location.endswith(f"/tasks/{task.id}?done=cancel")
    assert served.store.get(task.id).cancel_requested_at is not None
    assert served.store.get(task.id).cancel_reason == "requested in the web console"


def test_writes_need_a_sign_in_and_a_valid_token(served: Served) -> None:
    task = served.store.add(NewTask("job", "default", '{"image": "x"}'))
    b = served.browser()
    page = b.get(f"/tasks/{task.id}").body
    assert 'id="cancel"' in page and "You will be asked to sign in" in page
    answer = b.post(f"/tasks/{task.id}/cancel", {"csrf": b.csrf(f"/tasks/{task.id}")})
    assert answer.code == 303 and answer.location == f"/login?next=%2Ftasks%2F{task.id}"
    wrong = b.sign_in("not-it")
    assert wrong.code == 401 and "That token is not valid." in wrong.body
    assert served.store.get(task.id).cancel_requested_at is None


def test_with_no_token_configured_the_buttons_are_gone_and_writes_refused(read_only: Served) -> None:
    task = read_only.store.add(NewTask("job", "default", '{"image": "x"}'))
    b = read_only.browser()
    page = b.get(f"/tasks/{task.id}").body
    assert 'id="cancel"' not in page and "Read-only" in page
    assert 'id="submit" disabled' in b.get("/submit").body
    answer = b.post(f"/tasks/{task.id}/cancel", {"csrf": b.csrf("/submit")})
    assert answer.code == 403 and "writes are switched off" in answer.body


def test_reads_can_need_a_sign_in(private: Served) -> None:
    b = private.browser()
    answer = b.get("/tasks/1?x=1")
    assert answer.code == 303 and answer.location == "/login?next=%2Ftasks%2F1%3Fx%3D1"
    assert b.get("/console/live?ids=1").code == 401
    assert b.sign_in().location == "/?done=signed-in"
    assert b.get("/").code == 200


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "tasks"])
def test_signing_in_never_redirects_off_the_site(served: Served, target: str) -> None:
    b = served.browser()
    answer = b.post("/login", {"csrf": b.csrf("/login"), "token": TOKEN, "next": target})
    assert answer.code == 303 and answer.location == "/?done=signed-in"


def test_the_submit_form_becomes_the_apis_request(served: Served) -> None:
    b = served.browser()
    b.sign_in()
    answer = b.post("/submit", {"csrf": b.csrf(), "name": "from-form", "namespace": "default", "image": "busybox",
                                "command": "sh -c", "args": "echo 'a  b'; exit 0\n\nsecond arg",
                                "env": "A=1\nB=x=y\n", "user_id": "7"})
    assert answer.code == 303 and re.fullmatch(r"/tasks/\d+\?done=submitted", answer.location)
    task = served.store.find("from-form", "default")
    assert task.user_id == 7
    assert json.loads(task.info) == {"image": "busybox", "command": ["sh", "-c"],
                                     "args": ["echo 'a  b'; exit 0", "second arg"], "env": {"A": "1", "B": "x=y"}}
    events = served.store.events(task.id)
    assert events == [] or all(e.replica == "console" for e in events)


@pytest.mark.parametrize(("fields", "code", "problem"), [
    ({"name": "Bad_Name"}, 422, "is not a DNS-1123 label"),
    ({"namespace": "elsewhere"}, 422, "namespace &#39;elsewhere&#39; is not allowed"),
    ({"command": "sh -c 'unclosed"}, 422, "command: No closing quotation"),
    ({"env": "NOEQUALS"}, 422, "env line 1: expected KEY=VALUE"),
    ({"user_id": "seven"}, 422, "user id: &#39;seven&#39; is not a whole number"),
    ({"image": ""}, 422, "image: required"),
    ({"name": "taken"}, 409, "taken"),
])
def test_a_refused_submission_is_told_in_the_form_which_keeps_the_values(
        served: Served, fields: dict[str, str], code: int, problem: str) -> None:
    served.store.add(NewTask("taken", "default", '{"image": "x"}'))
    b = served.browser()
    b.sign_in()
    form = {"name": "ok-name", "namespace": "default", "image": "busybox", "command": "true", **fields}
    answer = b.post("/submit", {"csrf": b.csrf(), **form})
    assert answer.code == code, answer.body
    assert re.search(r'id="problem">[^<]*' + re.escape(problem), answer.body), answer.body
    assert f'value="{form["name"]}"' in answer.body


def test_retry_and_cancel_refusals_are_told_on_the_task_page(served: Served) -> None:
    task = served.store.add(NewTask("running", "default", '{"image": "x"}'))
    done = served.store.add(NewTask("done", "default", '{"image": "x"}'))
    served.store.transition(done.id, TaskStatus.NORMAL, TaskStatus.FAILED, replica="t")
    b = served.browser()
    b.sign_in()
    csrf = b.csrf()
    retry = b.post(f"/tasks/{task.id}/retry", {"csrf": csrf})
    assert retry.code == 409 and "it has not finished; cancel it first" in retry.body
    cancel = b.post(f"/tasks/{done.id}/cancel", {"csrf": csrf})
    assert cancel.code == 409 and "has already finished (Failed): nothing to cancel" in cancel.body
    assert 'id="retry"' in cancel.body
    again = b.post(f"/tasks/{done.id}/retry", {"csrf": csrf})
    assert again.code == 303 and served.store.get(done.id).attempt == 2
    assert b.post("/tasks/999/retry", {"csrf": csrf}).code == 404


def test_the_list_pages_by_keyset_and_the_live_route_brings_new_rows(served: Served) -> None:
    for i in range(55):
        served.store.add(NewTask(f"t{i}", "default", '{"image": "x"}'))
    b = served.browser()
    first = b.get("/").body
    ids = [int(n) for n in re.findall(r'<tr data-task-id="(\d+)"', first)]
    assert ids == list(range(55, 5, -1))  # newest first, one page of 50
    older = re.search(r'href="(/\?before=\d+)" id="older"', first)
    assert older and older.group(1) == "/?before=6"
    assert [int(n) for n in re.findall(r'<tr data-task-id="(\d+)"', b.get(older.group(1)).body)] == [5, 4, 3, 2, 1]
    added = served.store.add(NewTask("newer", "default", '{"image": "x"}'))
    live = json.loads(b.get("/console/live?ids=55,54&top=55&counts=1").body)
    assert [t["id"] for t in live["tasks"]] == [55, 54] and live["top"] == added.id
    assert f'data-task-id="{added.id}"' in live["new_rows"] and live["counts"] == {"Normal": 56}
    paged = json.loads(b.get("/console/live?ids=5&top=5&before=6").body)
    assert paged["new_rows"] == "" and paged["counts"] is None
    filtered = b.get("/?status=Failed&namespace=default").body
    assert "No tasks match these filters." in filtered


def test_unknown_task_and_cluster_pages(served: Served) -> None:
    b = served.browser()
    missing = b.get("/tasks/12345")
    assert missing.code == 404 and "no task with id 12345" in missing.body
    cluster = b.get("/cluster")
    assert cluster.code == 200 and 'id="epoch"' in cluster.body and 'id="replicas"' in cluster.body
    assert b.get("/static/console.js").code == 200 and b.get("/static/console.css").code == 200


def test_live_statuses_cover_rows_that_left_the_pages_filter(served: Served) -> None:
    tasks = [served.store.add(NewTask(f"t{i}", "default", '{"image": "x"}')) for i in range(3)]
    served.store.transition(tasks[1].id, TaskStatus.NORMAL, TaskStatus.FAILED, replica="t")
    ids = ",".join(str(t.id) for t in reversed(tasks))
    live = json.loads(served.browser().get(f"/console/live?ids={ids}&top={tasks[-1].id}&status=Normal").body)
    assert [(t["id"], t["status"]) for t in live["tasks"]] == [
        (tasks[2].id, "Normal"), (tasks[1].id, "Failed"), (tasks[0].id, "Normal")]


def test_pages_allow_only_their_own_scripts_and_are_never_framed(served: Served) -> None:
    headers = served.browser().get("/").headers
    assert headers.get_all("Content-Security-Policy") == [
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"]
    assert headers.get_all("X-Frame-Options") == ["DENY"]  # once: the server's, not twice


def test_a_live_update_costs_a_few_queries_however_many_rows_left_the_filter(served: Served,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = [served.store.add(NewTask(f"t{i}", "default", '{"image": "x"}')) for i in range(120)]
    for t in tasks:
        served.store.transition(t.id, TaskStatus.NORMAL, TaskStatus.FAILED, replica="t")
    calls: list[str] = []
    for name in ("get", "query"):
        method = getattr(served.store, name)
        monkeypatch.setattr(served.store, name, lambda *a, _m=method, _n=name, **k: calls.append(_n) or _m(*a, **k))
    ids = ",".join(str(t.id) for t in reversed(tasks))
    live = json.loads(served.browser().get(f"/console/live?ids={ids}&top={tasks[-1].id}&status=Normal").body)
    assert len(live["tasks"]) == 120 and {t["status"] for t in live["tasks"]} == {"Failed"}
    assert calls.count("get") == 0 and calls.count("query") <= 3  # not one get per row


def test_the_session_cookie_holds_no_plain_hash_of_the_token(served: Served) -> None:
    import base64
    import hashlib

    b = served.browser()
    assert b.sign_in().code == 303
    (cookie,) = [c for c in b.jar if c.name == "nightwatch_session"]
    payload = cookie.value.split(".")[0]
    session = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
    shown = json.dumps(session)
    assert TOKEN not in shown and hashlib.sha256(TOKEN.encode()).hexdigest() not in shown
    assert len(session["token_hmac"]) == 64
