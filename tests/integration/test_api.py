"""The REST API over real HTTP against running ``nightwatch run`` processes, on the embedded
default (SQLite, file lock, local jobs) and on PostgreSQL: every endpoint and every error
code, auth on and off, sessions and CSRF, body limits, injection strings, and a standby that
serves the API while the leader carries out what it is asked."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from api_client import (
    SECRET,
    TOKEN,
    Api,
    api_config,
    listen_overrides,
    postgres_store,
    session_cookie,
    signed_in_session,
    sqlite_store,
)
from daemons import Cluster, free_port, merge, wait_until
from sql_databases import postgres_database

from nightwatch.app.api import MAX_FOLLOWERS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SQL_INJECTION = "x'); DROP TABLE task; --"
HTML_INJECTION = "<script>alert('nw')</script>&amp;"
BAD_NAME = "<b>n</b>' OR '1'='1"  # 19 characters: fits task.name, is no DNS-1123 label


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if request.param == "sqlite":
        yield sqlite_store(tmp_path)
        return
    with postgres_database(request.getfixturevalue("postgres_dsn")) as dsn:
        yield postgres_store(dsn)


Start = Callable[..., tuple[Cluster, Api]]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """``start(store, name="r1", **auth)``: one more replica of one cluster (same store, lock and
    job directory), its API once it answers."""
    clusters: dict[str, Cluster] = {}

    def run(store: dict[str, Any], name: str = "r1", **auth: Any) -> tuple[Cluster, Api]:
        key = json.dumps(store, sort_keys=True) + json.dumps(auth, sort_keys=True)
        c = clusters.setdefault(key, Cluster(tmp_path, api_config(tmp_path, store, **auth)))
        base, overrides = listen_overrides()
        c.start(name, overrides=overrides)
        api = Api(base, TOKEN)
        try:
            api.ready()
        except AssertionError as e:
            raise AssertionError(f"{e}\n{c.tails()}") from None
        return c, api

    yield run
    for c in clusters.values():
        c.close()


def error_of(answer: Any, status: int, *needles: str) -> dict[str, Any]:
    assert answer.status == status, answer
    assert answer.headers["content-type"].startswith("application/json"), answer
    body = answer.json
    assert set(body) == {"error", "detail"} and all(isinstance(v, str) and v for v in body.values()), body
    for needle in needles:
        assert needle in body["detail"], (needle, body)
    return body  # type: ignore[no-any-return]


def test_submit_get_logs_retry_and_cancel_with_their_errors(store: dict[str, Any], start: Start) -> None:
    _, api = start(store)
    body = {"name": "hello", "namespace": "default", "image": "busybox", "command": ["sh", "-c"],
            "args": ["echo hello from the job"], "env": {"GREETING": "hi"}, "user_id": 7}
    error_of(api.post("/api/v1/tasks", body, token=None), 401, "Bearer")
    assert api.post("/api/v1/tasks", body, token=None).headers.get("www-authenticate") == "Bearer"
    error_of(api.post("/api/v1/tasks", body, token="wrong-" + TOKEN), 401, "wrong token")
    created = api.post("/api/v1/tasks", body)
    assert created.status == 201, created
    task = created.json
    assert created.headers["location"] == f"/api/v1/tasks/{task['id']}"
    assert (task["name"], task["status"], task["user_id"], task["attempt"]) == ("hello", "Normal", 7, 1)
    assert task["spec"] == {"image": "busybox", "command": ["sh", "-c"], "args": ["echo hello from the job"],
                            "env": {"GREETING": "hi"}}
    error_of(api.post("/api/v1/tasks", body), 409, "already exists")

    # validated as `task submit`: allow-lists, names, fields; 400 for what is no JSON object
    error_of(api.post("/api/v1/tasks", {**body, "name": "n2", "namespace": "kube-system"}), 422,
             "namespace 'kube-system' is not allowed")
    error_of(api.post("/api/v1/tasks", {**body, "name": BAD_NAME}), 422, BAD_NAME, "DNS-1123")
    error_of(api.post("/api/v1/tasks", {"name": "n3", "namespace": "default"}), 422, "image")
    error_of(api.post("/api/v1/tasks", {**body, "name": "n4", "env": ["A=1"]}), 422, "env")
    error_of(api.post("/api/v1/tasks", {**body, "name": "n5", "colour": "red"}), 422, "colour")
    error_of(api.post("/api/v1/tasks", data=b"{not json"), 400, "not valid JSON")
    error_of(api.post("/api/v1/tasks", [body]), 400, "JSON object")
    error_of(api.post("/api/v1/tasks", {**body, "name": "n6", "args": ["x" * 70_000]}), 413, "server.max_body")

    done = api.wait_status(task["id"], ("Succeeded",))
    assert [e["to"] for e in done["events"]][-1] == "Succeeded"
    assert all(e["duration"] is None or e["duration"] >= 0 for e in done["events"]), done["events"]
    assert done["events"][-1]["duration"] is None  # terminal: no time in it is counted
    assert [(a["attempt"], a["status"]) for a in done["attempts"]] == [(1, "Succeeded")]
    assert done["finished_at"] is not None
    logs = api.get(f"/api/v1/tasks/{task['id']}/logs")
    assert logs.status == 200 and logs.headers["content-type"].startswith("text/plain"), logs
    assert "hello from the job\n" in logs.text
    assert api.get(f"/api/v1/tasks/{task['id']}/logs?tail=0").text == ""
    error_of(api.get(f"/api/v1/tasks/{task['id']}/logs?tail=-1"), 400, "tail")

    error_of(api.post(f"/api/v1/tasks/{task['id']}/cancel"), 409, "already finished")
    error_of(api.post(f"/api/v1/tasks/{task['id']}/retry"), 409, "succeeded")
    error_of(api.post(f"/api/v1/tasks/{task['id']}/retry", {"force": "yes"}), 422, "force")
    retried = api.post(f"/api/v1/tasks/{task['id']}/retry", {"force": True})
    assert retried.status == 200 and retried.json["attempt"] == 2 and retried.json["status"] == "Normal", retried
    again = api.wait_status(task["id"], ("Succeeded",))
    assert [(a["attempt"], a["status"]) for a in again["attempts"]] == [(1, "Succeeded"), (2, "Succeeded")]

    long = api.submit("sleeper", ["sleep"], ["60"])
    api.wait_status(long["id"], ("Running",))
    error_of(api.post(f"/api/v1/tasks/{long['id']}/retry"), 409, "cancel it first")
    error_of(api.post(f"/api/v1/tasks/{long['id']}/cancel", token=None), 401)
    asked = api.post(f"/api/v1/tasks/{long['id']}/cancel", {"reason": HTML_INJECTION})
    assert asked.status == 202 and asked.json["cancel_reason"] == HTML_INJECTION, asked
    cancelled = api.wait_status(long["id"], ("Cancelled",))
    assert [(a["attempt"], a["status"]) for a in cancelled["attempts"]] == [(1, "Cancelled")]
    error_of(api.post(f"/api/v1/tasks/{long['id']}/cancel"), 409, "already finished")
    assert api.post(f"/api/v1/tasks/{long['id']}/retry").json["attempt"] == 2  # a cancelled task is retried

    for path in ("/api/v1/tasks/999999", "/api/v1/tasks/999999/logs", "/api/v1/tasks/nine", "/api/v1/nothing"):
        error_of(api.get(path), 404)
    error_of(api.post("/api/v1/tasks/999999/cancel"), 404, "999999")
    error_of(api.post("/api/v1/tasks/999999/retry"), 404, "999999")


def test_list_pages_filters_and_counts(store: dict[str, Any], start: Start) -> None:
    _, api = start(store)
    ids = [api.submit(f"t{i}", ["true"], user_id=i % 3)["id"] for i in range(7)]
    other = api.post("/api/v1/tasks", {"name": "t0", "namespace": "other", "image": "busybox",
                                       "command": ["true"]}).json["id"]
    everything = sorted([*ids, other], reverse=True)
    seen: list[int] = []
    cursor = ""
    for _ in range(10):
        page = api.get(f"/api/v1/tasks?limit=3{cursor}").json
        seen += [t["id"] for t in page["tasks"]]
        assert page["total"] == 8
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == everything  # newest first, each once, nothing left out

    def names(query: str) -> list[tuple[str, str]]:
        answer = api.get(f"/api/v1/tasks?{query}")
        assert answer.status == 200, answer
        return [(t["name"], t["namespace"]) for t in answer.json["tasks"]]

    assert names("namespace=other") == [("t0", "other")]
    assert names("name=t0") == [("t0", "other"), ("t0", "default")]
    assert names("name=t0&namespace=default") == [("t0", "default")]
    assert [n for n, _ in names("user_id=2")] == ["t5", "t2"]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert names(f"since={future}") == []
    assert len(names("since=2000-01-01T00:00:00")) == 8
    for i in everything:
        api.wait_status(i, ("Succeeded",))
    answer = api.get("/api/v1/tasks?status=Succeeded&status=Failed").json
    assert answer["total"] == 8 and answer["counts"] == {"Succeeded": 8}
    assert api.get("/api/v1/tasks?status=Normal,Running").json["tasks"] == []
    error_of(api.get("/api/v1/tasks?limit=0"), 400, "limit")
    error_of(api.get("/api/v1/tasks?limit=501"), 400, "limit")
    error_of(api.get("/api/v1/tasks?cursor=abc"), 400, "cursor")
    error_of(api.get("/api/v1/tasks?user_id=x"), 400, "user_id")
    error_of(api.get("/api/v1/tasks?since=yesterday"), 400, "since")


def test_injection_strings_in_names_messages_and_logs_come_back_literally(
        store: dict[str, Any], start: Start) -> None:
    _, api = start(store)
    payload = f"{SQL_INJECTION} {HTML_INJECTION}"
    printer = api.submit("printer", ["sh", "-c", 'printf "%s\\n" "$PAYLOAD"'], env={"PAYLOAD": payload})
    api.wait_status(printer["id"], ("Succeeded",))
    logs = api.get(f"/api/v1/tasks/{printer['id']}/logs")
    assert logs.text.splitlines()[-1] == payload
    assert logs.headers["content-type"].startswith("text/plain")  # and never sniffed into HTML:
    assert logs.headers["x-content-type-options"] == "nosniff"
    # a name the user's system wrote (no DNS label): the leader fails it, naming it in the message
    error_of(api.post("/api/v1/tasks", {"name": BAD_NAME, "namespace": "default", "image": "i"}), 422, BAD_NAME)
    inserted = _insert_directly(store, BAD_NAME)
    failed = api.wait_status(inserted, ("Failed",))
    assert failed["name"] == BAD_NAME and BAD_NAME in failed["message"], failed
    found = api.get("/api/v1/tasks?name=" + _quote(BAD_NAME)).json["tasks"]
    assert [t["id"] for t in found] == [inserted]
    assert api.get("/api/v1/tasks?name=" + _quote("x' OR '1'='1")).json["tasks"] == []
    assert api.get("/api/v1/tasks?namespace=" + _quote(SQL_INJECTION)).json["total"] == 0
    assert api.get("/api/v1/tasks").json["total"] == 2  # the table is still there, whole


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _insert_directly(store: dict[str, Any], name: str) -> int:
    """The user's own system adds a row (through the store, as `task submit` would)."""
    from nightwatch.adapters.clock import SystemClock
    from nightwatch.adapters.store import sql
    from nightwatch.domain.model import NewTask

    clock = SystemClock()
    if store["backend"] == "sqlite":
        s = sql.sqlite_store(store["sqlite"]["path"], clock)
    else:
        s = sql.postgres_store(store["postgres"]["dsn"], clock)
    try:
        return s.add(NewTask(name, "default", json.dumps({"image": "i", "command": ["true"]}))).id
    finally:
        s.close()


def test_following_a_log_streams_until_the_job_ends(store: dict[str, Any], start: Start) -> None:
    _, api = start(store)
    quiet = api.submit("quiet", ["sleep"], ["60"])
    api.wait_status(quiet["id"], ("Running",))
    host, port = api.base.removeprefix("http://").split(":")
    streams = []
    for _ in range(MAX_FOLLOWERS):  # each answers its headers at once, though nothing is printed yet
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", f"/api/v1/tasks/{quiet['id']}/logs?follow=1")
        assert conn.getresponse().status == 200
        streams.append(conn)
    error_of(api.get(f"/api/v1/tasks/{quiet['id']}/logs?follow=1"), 503, "followed already")
    assert api.get(f"/api/v1/tasks/{quiet['id']}/logs").status == 200  # without follow: still served
    for conn in streams:
        conn.close()
    assert api.post(f"/api/v1/tasks/{quiet['id']}/cancel").status == 202  # ends the Job, so every stream
    api.wait_status(quiet["id"], ("Cancelled",))
    error_of(api.get(f"/api/v1/tasks/{quiet['id']}/logs?follow=1"), 404)  # its Job is gone
    task = api.submit("counter", ["sh", "-c", "for i in 1 2 3 4; do echo line $i; sleep 0.5; done"])
    api.wait_status(task["id"], ("Running",))
    followed = api.get(f"/api/v1/tasks/{task['id']}/logs?follow=1&tail=100", timeout=30)
    assert followed.status == 200, followed
    assert followed.text.splitlines()[-1] == "line 4", followed.text  # the stream ended with the Job
    api.wait_status(task["id"], ("Succeeded",))


def test_cluster_reports_the_leader_its_epoch_the_replicas_and_leader_changes(
        store: dict[str, Any], start: Start) -> None:
    c, first = start(store, "r1")
    wait_until(lambda: first.get("/api/v1/cluster").json["leader"] == "r1", 15, "r1 to lead")
    _, second = start(store, "r2")
    view = wait_until(lambda: (v := second.get("/api/v1/cluster").json) and len(v["replicas"]) == 2 and v, 15,
                      "both replicas to report themselves")
    assert view["leader"] == "r1" and view["served_by"] == "r2" and view["epoch"] >= 1, view
    roles = {r["identity"]: r["role"] for r in view["replicas"]}
    assert roles == {"r1": "leader", "r2": "standby"}, view
    assert all(r["alive"] and r["last_heartbeat"] and r["started_at"] and r["version"] for r in view["replicas"])
    assert view["leader_changes"][0]["holder"] == "r1" and view["leader_changes"][0]["epoch"] == view["epoch"]
    assert isinstance(view["counts"], dict)
    c.replicas[0].kill()  # the leader goes: r2 takes over, with a newer epoch, recorded
    after = wait_until(lambda: (v := second.get("/api/v1/cluster").json)["leader"] == "r2"
                       and v["leader_changes"][0]["holder"] == "r2" and v, 30, lambda: f"r2 to lead\n{c.tails()}")
    assert after["epoch"] > view["epoch"]
    assert [ch["holder"] for ch in after["leader_changes"][:2]] == ["r2", "r1"], after
    doc = second.get("/api/v1/openapi.json", token=None).json
    assert doc["openapi"].startswith("3.") and "/tasks/{id}/cancel" in doc["paths"]


def test_a_standby_serves_the_api_and_the_leader_carries_out_its_cancel(
        store: dict[str, Any], start: Start) -> None:
    _, first = start(store, "r1")
    wait_until(lambda: first.get("/api/v1/cluster").json["leader"] == "r1", 15, "r1 to lead")
    _, standby = start(store, "r2")
    assert standby.get("/api/v1/cluster").json["leader"] == "r1"
    task = standby.submit("long", ["sleep"], ["60"])  # submitted to the standby too
    running = first.wait_status(task["id"], ("Running",))
    assert standby.task(task["id"])["status"] == "Running"
    assert standby.get("/api/v1/tasks").json["tasks"][0]["id"] == running["id"]
    asked = standby.post(f"/api/v1/tasks/{task['id']}/cancel")
    assert asked.status == 202, asked
    done = standby.wait_status(task["id"], ("Cancelled",))
    leader_events = [e for e in done["events"] if e["to"] == "Cancelled"]
    assert leader_events and leader_events[0]["replica"] == "r1", done["events"]  # the leader did it


def test_writes_are_off_without_a_token(start: Start, tmp_path: Path) -> None:
    _, api = start(sqlite_store(tmp_path), tokens=[])
    assert api.get("/api/v1/tasks").status == 200
    body = {"name": "a", "namespace": "default", "image": "i"}
    error_of(api.post("/api/v1/tasks", body), 403, "server.auth.tokens")
    error_of(api.post("/api/v1/tasks", body, token=None), 403, "server.auth.tokens")
    error_of(api.post("/api/v1/tasks/1/cancel"), 403, "server.auth.tokens")


def test_reads_need_a_token_when_auth_read_is_on(start: Start, tmp_path: Path) -> None:
    _, api = start(sqlite_store(tmp_path), read=True)
    for path in ("/api/v1/tasks", "/api/v1/tasks/1", "/api/v1/cluster", "/api/v1/tasks/1/logs"):
        error_of(api.get(path, token=None), 401, "server.auth.read")
        error_of(api.get(path, token="not-" + TOKEN), 401, "wrong token")
    assert api.get("/api/v1/tasks").status == 200
    assert Api(api.base).get("/healthz", token=None).status == 200  # probes never need one


def test_a_session_post_needs_the_csrf_token(start: Start, tmp_path: Path) -> None:
    _, api = start(sqlite_store(tmp_path))
    body = {"name": "by-session", "namespace": "default", "image": "i", "command": ["true"]}
    cookie = session_cookie(signed_in_session("the-csrf-token"))
    error_of(api.post("/api/v1/tasks", body, token=None, headers={"Cookie": cookie}), 403, "CSRF")
    error_of(api.post("/api/v1/tasks", body, token=None,
                      headers={"Cookie": cookie, "X-CSRF-Token": "another"}), 403, "CSRF")
    forged = session_cookie(signed_in_session("the-csrf-token"), secret="z" * len(SECRET))
    error_of(api.post("/api/v1/tasks", body, token=None,
                      headers={"Cookie": forged, "X-CSRF-Token": "the-csrf-token"}), 401)
    stale = session_cookie(signed_in_session("the-csrf-token", token="a-token-no-longer-configured"))
    error_of(api.post("/api/v1/tasks", body, token=None,
                      headers={"Cookie": stale, "X-CSRF-Token": "the-csrf-token"}), 401)
    ok = api.post("/api/v1/tasks", body, token=None, headers={"Cookie": cookie, "X-CSRF-Token": "the-csrf-token"})
    assert ok.status == 201, ok


def test_an_unavailable_store_is_503_and_the_probes_still_answer(start: Start, tmp_path: Path) -> None:
    c = Cluster(tmp_path, merge(api_config(tmp_path, postgres_store(
        f"postgresql://postgres@127.0.0.1:{free_port()}/none")), {"store": {"postgres": {"connect_timeout": "1s"}}}))
    base, overrides = listen_overrides()
    try:
        c.start("r1", overrides=overrides)
        api = Api(base, TOKEN)
        wait_until(lambda: _answers(api), 20, lambda: f"the API\n{c.tails()}", interval=0.2)
        error_of(api.get("/api/v1/tasks"), 503, "store")
        error_of(api.get("/api/v1/cluster"), 503)
        error_of(api.post("/api/v1/tasks", {"name": "a", "namespace": "default", "image": "i"}), 503)
        assert api.get("/healthz").status == 200
        assert api.get("/readyz").status == 503
    finally:
        c.close()


def _answers(api: Api) -> bool:
    try:
        return api.get("/healthz", timeout=2).status == 200
    except OSError:
        return False
