"""The issue's own scenario with the seed's two rows: ``task cancel demo-task-2 -n demo`` stops
its ``sleep 3600``, the row reads ``Cancelled``; ``task retry`` runs it again; ``task logs``
shows a task's output. On the fake backend (the daemon's cycles run in this process) and on
the embedded default with local jobs (a real ``nightwatch run``)."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
from pathlib import Path

import pytest
from test_cli_tasks import NIGHTWATCH, Setup, sql_store_has_the_lifecycle, wait_until

from nightwatch.app import task_watcher
from nightwatch.domain.model import NewTask, job_name

SEED = [("demo-task-1", "default", '{"image":"alpine","command":["sleep"],"args":["60"]}', 1),
        ("demo-task-2", "demo", '{"image":"busybox","command":["sleep"],"args":["3600"]}', 2)]

watcher_cancels = pytest.mark.skipif(
    "cancel_requested_at" not in inspect.getsource(task_watcher),
    reason="the task watcher does not carry out cancel requests on this branch yet",
)


def cycle(env: Setup) -> None:
    """One ``run --once`` of the daemon over the test's store and fake cluster."""
    env.container.reset_singletons()  # a fresh daemon, elector and scheduler; same adapters
    assert env.container.daemon().run_once(10.0) == 0


@watcher_cancels
def test_seed_cancel_and_retry_on_the_fake_backend(tmp_path: Path) -> None:
    env = Setup("memory", tmp_path)
    for name, namespace, info, user in SEED:
        env.store.add(NewTask(name, namespace, info, user))
    cycle(env)
    assert env.store.find("demo-task-2", "demo").status in ("Pending", "Running")
    assert env.ok("task", "cancel", "demo-task-2", "-n", "demo").startswith("task 2 (demo/demo-task-2)")
    cycle(env)
    row = env.store.find("demo-task-2", "demo")
    assert row.status == "Cancelled" and ("demo", "demo-task-2", 2) in env.gateway.cancelled
    assert env.cli("task", "wait", "demo-task-2", "-n", "demo", "--timeout", "1s").code == 0
    assert env.store.find("demo-task-1", "default").status in ("Pending", "Running")  # untouched
    assert "attempt 2 queued" in env.ok("task", "retry", "demo-task-2", "-n", "demo")
    cycle(env)
    again = env.store.find("demo-task-2", "demo")
    assert again.attempt == 2 and again.status in ("Pending", "Running")
    assert ("demo", job_name("demo-task-2", 2), 2) in env.gateway.created  # its own Job, never the old one
    timeline = env.ok("task", "events", "2")
    assert "Running → Cancelled" in timeline or "Pending → Cancelled" in timeline
    assert "Cancelled → Normal" in timeline


def local_lifecycle() -> bool:
    from nightwatch.adapters.jobs.local import LocalJobGateway

    return sql_store_has_the_lifecycle() and all(m in vars(LocalJobGateway) for m in ("cancel", "logs"))


@watcher_cancels
@pytest.mark.skipif(not local_lifecycle(), reason="the SQL store or the local gateway lacks cancel/logs here yet")
def test_seed_cancel_stops_the_local_sleep_and_logs_show_output(tmp_path: Path) -> None:
    env = Setup("sqlite", tmp_path)
    cfg = env.config.read_text().replace("server:", "watchers: {task: {spec: '@every 500ms'}}\nserver:")
    env.config.write_text(cfg)
    for name, namespace, info, user in SEED:
        env.store.add(NewTask(name, namespace, info, user))
    env.ok("task", "submit", "--name", "hello", "-n", "default", "--image", "alpine", "--", "sh", "-c",
           "echo hi from the job")
    log = open(tmp_path / "daemon.log", "w")  # noqa: SIM115 - open for the daemon's whole life
    daemon = subprocess.Popen([*NIGHTWATCH, "run", "--config", str(env.config)], stdout=log,
                              stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_until(lambda: env.store.find("demo-task-2", "demo").status == "Running", 30)
        pid = int((tmp_path / ".nightwatch" / "jobs" / "demo" / "demo-task-2" / "pid").read_text())
        assert "cancel requested" in env.ok("task", "cancel", "demo-task-2", "-n", "demo")
        assert env.cli("task", "wait", "demo-task-2", "-n", "demo", "--timeout", "30s").code == 0
        assert env.store.find("demo-task-2", "demo").status == "Cancelled"
        wait_until(lambda: not alive(pid), 10)  # the sleep 3600 and its wrapper are gone
        assert env.cli("task", "wait", "hello", "-n", "default", "--for", "Succeeded", "--timeout", "30s").code == 0
        assert env.ok("task", "logs", "hello", "-n", "default") == "hi from the job\n"
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=15)
        log.close()


def alive(pgid: int) -> bool:
    """Whether any process of the Job's process group is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


