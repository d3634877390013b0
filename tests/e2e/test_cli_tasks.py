"""The task commands as a user runs them, on two set-ups that share every test:

- ``memory``: ``store.backend: memory`` + ``jobs.backend: fake``. The CLI runs in this process
  (``main(argv, container=...)``) over one store and one fake cluster, since a memory store
  lives as long as its process.
- ``sqlite``: the embedded default (SQLite + local jobs), the CLI a subprocess; the test
  reads and moves rows through a second store on the same file, as another replica would.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from dependency_injector import providers

from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.jobs.fake import FakeJobGateway
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.app.cli import main
from nightwatch.app.config import load_config
from nightwatch.app.container import build_container
from nightwatch.domain.jobspec import parse_info
from nightwatch.domain.model import NewTask, TaskStatus

NIGHTWATCH = [sys.executable, "-m", "nightwatch"]
S = TaskStatus


def sql_store_has_the_lifecycle() -> bool:
    from nightwatch.adapters.store.sql import SQLTaskStore

    return all(m in vars(SQLTaskStore) for m in ("request_cancel", "requeue", "query", "count", "events", "find"))


@dataclass
class Result:
    code: int
    out: str
    err: str


class Setup:
    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind, self.tmp = kind, tmp
        self.config = tmp / "nightwatch.yaml"
        doc: dict[str, Any] = {
            "jobs": {"allowed_namespaces": ["default", "demo"], "allowed_images": ["alpine", "busybox"]},
            "server": {"listen": ""},
        }
        if kind == "memory":
            doc["store"], doc["lock"] = {"backend": "memory"}, {"backend": "memory"}
            doc["jobs"]["backend"] = "fake"
        else:
            doc["store"] = {"sqlite": {"path": str(tmp / "nightwatch.db")}}
            doc["lock"] = {"file": {"path": str(tmp / "nightwatch.lock")}}
            doc["jobs"]["local"] = {"state_dir": str(tmp / ".nightwatch")}
        self.config.write_text(yaml.safe_dump(doc))
        if kind == "memory":
            self.store: Any = InMemoryTaskStore(SystemClock())
            self.gateway: Any = FakeJobGateway(SystemClock())
            self.container = build_container(load_config(str(self.config)))
            self.container.store.override(providers.Object(self.store))
            self.container.gateway.override(providers.Object(self.gateway))
        else:
            from nightwatch.adapters.store.sql import sqlite_store

            self.store = sqlite_store(str(tmp / "nightwatch.db"), SystemClock())
            self.store.migrate()

    def cli(self, *args: str, stdout: io.StringIO | None = None) -> Result:
        argv = ["--config", str(self.config), *args]
        if self.kind == "sqlite":
            proc = subprocess.run([*NIGHTWATCH, *argv], capture_output=True, text=True, timeout=60)
            return Result(proc.returncode, proc.stdout, proc.stderr)
        out, err = stdout or io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv, container=self.container)
            except SystemExit as e:  # argparse: a usage error
                code = int(e.code or 0)
        return Result(code, out.getvalue(), err.getvalue())

    def ok(self, *args: str) -> str:
        r = self.cli(*args)
        assert r.code == 0, (args, r.err)
        return r.out

    def add(self, name: str, namespace: str = "default", status: S = S.NORMAL, user_id: int = 0) -> Any:
        task = self.store.add(NewTask(name, namespace, '{"image": "alpine", "command": ["true"]}', user_id))
        path = {S.NORMAL: [], S.PENDING: [S.PENDING], S.RUNNING: [S.PENDING, S.RUNNING],
                S.SUCCEEDED: [S.PENDING, S.RUNNING, S.SUCCEEDED], S.FAILED: [S.PENDING, S.RUNNING, S.FAILED],
                S.CANCELLED: [S.CANCELLED]}[status]
        old = S.NORMAL
        for new in path:
            assert self.store.transition(task.id, old, new, "exit code 3: oops" if new is S.FAILED else None,
                                         attempt=1, replica="test")
            old = new
        return self.store.get(task.id)


@pytest.fixture(params=["memory", "sqlite"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    if request.param == "sqlite" and not sql_store_has_the_lifecycle():
        pytest.skip("the SQL store does not implement the lifecycle calls (query, request_cancel, ...) yet")
    return Setup(request.param, tmp_path)


@pytest.fixture(params=["memory", "sqlite"])
def any_env(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    """For the tests that need none of the lifecycle calls: they run on every branch."""
    return Setup(request.param, tmp_path)


def test_submit_takes_dash_values_words_after_dashes_env_and_retries(any_env: Setup) -> None:
    t = json.loads(any_env.ok("task", "submit", "--name", "a", "-n", "demo", "--image", "busybox",
                          "--command", "sh", "--arg", "-c", "--arg", "echo hi", "--json"))
    assert json.loads(t["info"]) == {"image": "busybox", "command": ["sh"], "args": ["-c", "echo hi"]}
    t = json.loads(any_env.ok("task", "submit", "--name", "b", "--namespace", "default", "--image", "alpine",
                          "--env", "K=V", "--retries", "2", "--json", "--", "sh", "-c", "echo hi"))
    info = json.loads(t["info"])
    assert info == {"image": "alpine", "command": ["sh"], "args": ["-c", "echo hi"], "env": {"K": "V"},
                    "retries": 2}
    assert parse_info(t["info"]).argv == ["sh", "-c", "echo hi"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--name", "Bad_Name", "-n", "default", "--image", "alpine"], "task name 'Bad_Name' is not a DNS-1123 label"),
    (["--name", "x", "-n", "prod", "--image", "alpine"],
     "namespace 'prod' is not allowed (jobs.allowed_namespaces: default, demo)"),
    (["--name", "x", "-n", "default", "--image", "alpin"],
     "image 'alpin' is not allowed (jobs.allowed_images: alpine, busybox)"),
    (["--name", "x", "-n", "default", "--image", " "], "info.image is missing or empty"),
])
def test_submit_refuses_a_task_certain_to_fail_with_the_daemons_message(any_env: Setup, argv: list[str],
                                                                        message: str) -> None:
    r = any_env.cli("task", "submit", *argv)
    assert r.code == 1 and r.err.strip().startswith("nightwatch: invalid task: ") and message in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1
    assert any_env.store.page(None, 0, 10) == []  # nothing inserted


def test_list_newest_first_with_filters_limit_and_how_many_more(env: Setup) -> None:
    for i in range(5):
        env.add(f"t{i}", "demo" if i % 2 else "default", user_id=i)
    table = env.ok("task", "list").splitlines()
    assert table[0].split()[:5] == ["ID", "NAME", "NAMESPACE", "STATUS", "ATTEMPT"]
    assert [line.split()[1] for line in table[1:]] == ["t4", "t3", "t2", "t1", "t0"]
    limited = env.ok("task", "list", "--limit", "2").splitlines()
    assert [line.split()[1] for line in limited[1:3]] == ["t4", "t3"]
    assert limited[3].startswith("... and 3 more")
    assert [t["name"] for t in json.loads(env.ok("task", "list", "-n", "demo", "-o", "json"))] == ["t3", "t1"]
    assert [t["name"] for t in json.loads(env.ok("task", "list", "--name", "t2", "--json"))] == ["t2"]
    assert [t["name"] for t in json.loads(env.ok("task", "list", "--user-id", "4", "--json"))] == ["t4"]
    assert len(json.loads(env.ok("task", "list", "--since", "1h", "--json"))) == 5
    future = (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None).isoformat()
    assert json.loads(env.ok("task", "list", "--since", future, "--json")) == []
    more = env.cli("task", "list", "--limit", "1", "-o", "json")
    assert len(json.loads(more.out)) == 1 and "4 more" in more.err  # stdout stays a document


def test_list_output_formats_and_status_filter(env: Setup) -> None:
    env.add("ok", status=S.SUCCEEDED)
    env.add("bad", status=S.FAILED)
    as_json = json.loads(env.ok("task", "list", "-o", "json"))
    assert as_json[0]["info"] == {"image": "alpine", "command": ["true"]}  # an object, not a string
    assert as_json[0]["finished_at"] and as_json[0]["attempt"] == 1
    assert yaml.safe_load(env.ok("task", "list", "-o", "yaml"))[1]["info"]["image"] == "alpine"
    assert isinstance(json.loads(env.ok("task", "list", "--json"))[0]["info"], str)  # --json as before
    wide = env.ok("task", "list", "-o", "wide")
    assert "FINISHED" in wide.splitlines()[0] and "exit code 3: oops" in wide
    assert [t["name"] for t in json.loads(env.ok("task", "list", "--status", "Failed", "--json"))] == ["bad"]
    both = json.loads(env.ok("task", "list", "--status", "Failed,Succeeded", "--json"))
    assert len(both) == 2


def test_get_shows_attempts_and_the_timeline(env: Setup) -> None:
    t = env.add("flaky", "demo", status=S.FAILED)
    assert env.store.requeue(t.id, S.FAILED, 1, None, replica="cli")
    assert env.store.transition(t.id, S.NORMAL, S.PENDING, attempt=2, replica="test")
    text = env.ok("task", "get", "flaky", "-n", "demo")
    assert "Attempts:" in text and "Events:" in text
    attempts = text.split("Attempts:")[1].split("Events:")[0].splitlines()[2:]
    assert attempts[0].split()[:2] == ["1", "Failed"] and "exit code 3: oops" in attempts[0]
    assert attempts[1].split()[:2] == ["2", "Pending"]
    assert "Failed → Normal" in text and "so far" in text
    doc = json.loads(env.ok("task", "get", str(t.id), "--json"))
    assert doc["name"] == "flaky" and doc["attempt"] == 2
    assert [(a["attempt"], a["status"]) for a in doc["attempts"]] == [(1, "Failed"), (2, "Pending")]
    assert all(a[k] >= 0 for a in doc["attempts"] for k in ("waiting", "pending", "running"))
    assert [(e["from_status"], e["to_status"]) for e in doc["events"]][-2:] == [("Failed", "Normal"),
                                                                               ("Normal", "Pending")]


def test_events_prints_the_timeline(env: Setup) -> None:
    t = env.add("done", status=S.SUCCEEDED)
    lines = env.ok("task", "events", str(t.id)).splitlines()
    assert lines[0].split()[:4] == ["TIME", "ATTEMPT", "FROM", "→"]
    assert ["Normal → Pending" in lines[1], "Pending → Running" in lines[2], "Running → Succeeded" in lines[3]] \
        == [True, True, True]
    assert all(" test" in line for line in lines[1:])  # the replica that wrote it
    events = json.loads(env.ok("task", "events", "done", "-n", "default", "--json"))
    assert [e["to_status"] for e in events] == ["Pending", "Running", "Succeeded"]
    fresh = env.add("fresh")
    assert "no events" in env.ok("task", "events", str(fresh.id))


def test_cancel_requests_once_and_refuses_a_finished_task(env: Setup) -> None:
    t = env.add("demo-task-2", "demo", status=S.RUNNING)
    first = env.cli("task", "cancel", "demo-task-2", "-n", "demo", "--reason", "not needed")
    assert first.code == 0 and "cancel requested" in first.out, first.err
    row = env.store.get(t.id)
    assert row.cancel_requested_at is not None and row.cancel_reason == "not needed"
    assert row.status == S.RUNNING  # the leader carries it out, not the CLI
    again = env.cli("task", "cancel", str(t.id))
    assert again.code == 0 and "already requested" in again.out and "not needed" in again.out
    done = env.add("done", status=S.SUCCEEDED)
    late = env.cli("task", "cancel", str(done.id))
    assert late.code == 1 and "already finished (Succeeded): nothing to cancel" in late.err
    assert env.store.get(done.id).cancel_requested_at is None
    plain = env.add("plain")
    assert env.cli("task", "cancel", str(plain.id)).code == 0
    assert "task cancel" in (env.store.get(plain.id).cancel_reason or "")  # who asked, by default


def test_retry_starts_the_next_attempt_and_refuses_what_it_must(env: Setup) -> None:
    failed = env.add("failed", status=S.FAILED)
    r = env.cli("task", "retry", "failed", "-n", "default")
    assert r.code == 0 and "attempt 2 queued" in r.out, r.err
    row = env.store.get(failed.id)
    assert (row.status, row.attempt, row.message, row.finished_at) == ("Normal", 2, None, None)
    assert env.store.events(failed.id)[-1].replica == "cli"
    running = env.add("running", status=S.RUNNING)
    refused = env.cli("task", "retry", str(running.id))
    assert refused.code == 1 and "is Running (attempt 1): cancel it first" in refused.err
    assert env.store.get(running.id).attempt == 1
    normal = env.cli("task", "retry", str(failed.id))  # Normal now
    assert normal.code == 1 and "waiting to run already" in normal.err
    ok = env.add("ok", status=S.SUCCEEDED)
    no_force = env.cli("task", "retry", str(ok.id))
    assert no_force.code == 1 and "--force" in no_force.err
    assert env.cli("task", "retry", str(ok.id), "--force").code == 0
    assert env.store.get(ok.id).attempt == 2
    cancelled = env.add("cancelled", status=S.CANCELLED)
    assert env.cli("task", "retry", str(cancelled.id)).code == 0


def test_wait_exit_status_says_how_it_ended(env: Setup) -> None:
    ok, bad, stuck = env.add("ok", status=S.SUCCEEDED), env.add("bad", status=S.FAILED), env.add("stuck")
    assert env.cli("task", "wait", str(ok.id), "--for", "Succeeded").code == 0
    assert env.cli("task", "wait", str(bad.id)).code == 0  # terminal, as asked
    ended = env.cli("task", "wait", str(bad.id), "--for", "Succeeded")
    assert ended.code == 1 and "Failed" in ended.out
    timeout = env.cli("task", "wait", str(stuck.id), "--timeout", "300ms", "--interval", "100ms")
    assert timeout.code == 124 and "still Normal after" in timeout.err
    running = env.add("later", status=S.RUNNING)

    def finish() -> None:
        time.sleep(0.5)
        env.store.transition(running.id, S.RUNNING, S.SUCCEEDED, attempt=1, replica="test")

    threading.Thread(target=finish, daemon=True).start()
    waited = env.cli("task", "wait", "later", "-n", "default", "--interval", "100ms")
    # how long the CLI takes to start decides whether it saw Running first: only the end is certain
    assert waited.code == 0 and "Succeeded" in waited.out


def test_every_task_command_takes_an_id_or_a_name_with_namespace(env: Setup) -> None:
    env.add("named", "demo")
    for command in ("get", "cancel", "retry", "logs", "events", "wait"):
        usage = env.cli("task", command, "named")
        assert usage.code == 64 and "give a task name with -n NAMESPACE" in usage.err, (command, usage.err)
        missing = env.cli("task", command, "named", "-n", "default")
        assert missing.code == 1 and missing.err.strip() == "nightwatch: no task 'named' in namespace 'default'"
        assert env.cli("task", command, "999").err.strip() == "nightwatch: no task with id 999"


def test_logs_of_the_fake_backend(tmp_path: Path) -> None:
    env = Setup("memory", tmp_path)
    t = env.store.add(NewTask("hi", "default", '{"image": "alpine", "command": ["echo"], "args": ["hello"]}'))
    none = env.cli("task", "logs", str(t.id))
    assert none.code == 1 and "no Job for attempt 1" in none.err
    env.gateway.launch(t, parse_info(t.info))
    assert env.ok("task", "logs", "hi", "-n", "default", "--tail", "5") == "hello\n"


def test_list_watch_redraws_on_change_until_ctrl_c(tmp_path: Path) -> None:
    import _thread

    env = Setup("memory", tmp_path)
    screen = io.StringIO()

    def drive() -> None:
        wait_until(lambda: "ID" in screen.getvalue())
        env.store.add(NewTask("late", "default", "{}"))
        wait_until(lambda: "late" in screen.getvalue())
        _thread.interrupt_main()

    threading.Thread(target=drive, daemon=True).start()
    r = env.cli("task", "list", "--watch", "--interval", "50ms", stdout=screen)
    assert r.code == 0
    frames = [f for f in screen.getvalue().split("\n\n") if f.strip()]
    assert len(frames) == 2 and "late" not in frames[0] and "late" in frames[1]  # one frame per change


def wait_until(predicate: Any, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("shell", ["bash", "zsh", "tcsh"])
def test_completion_scripts(shell: str, tmp_path: Path) -> None:
    proc = subprocess.run([*NIGHTWATCH, "completion", shell], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "nightwatch" in proc.stdout and "submit" in proc.stdout and "completion" in proc.stdout
    if shell != "tcsh":  # shtab's tcsh script completes commands, not their options
        assert "--retries" in proc.stdout and "--watch" in proc.stdout
    if shell == "bash":
        check = subprocess.run(["bash", "-n"], input=proc.stdout, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
