"""The production set-up: an admin runs ``db migrate``, the service runs as a database user
with SELECT, INSERT and UPDATE only. That user runs the daemon and every task command; on
``db migrate`` it gets one line naming the privilege it lacks."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from daemons import NIGHTWATCH, wait_until
from schema_targets import Target, error_line, nightwatch, server_db  # noqa: F401

from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.store.sql import mysql_store, postgres_store
from nightwatch.domain.ports import TaskStore

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


def test_a_dml_only_user_cannot_migrate_and_is_told_which_privilege_is_missing(
        server_db: Target) -> None:  # noqa: F811
    service = server_db.config("service", store=server_db.dml_user())
    proc = nightwatch(service, "db", "migrate")
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc)
    assert re.search(r"\b(CREATE|ALTER)\b", line), line  # names the privilege to grant
    assert "task list" not in line
    # and a read-only command tells it what to do instead
    assert error_line(nightwatch(service, "task", "list")).endswith("run nightwatch db migrate")


def test_a_dml_only_user_runs_the_daemon_and_every_task_command_after_an_admin_migrated(
        server_db: Target) -> None:  # noqa: F811
    service = server_db.config("service", store=server_db.dml_user())
    admin = server_db.config("admin")
    assert nightwatch(admin, "db", "migrate").returncode == 0
    server_db.grant_history_pruning()

    assert nightwatch(service, "db", "status").stdout.strip() == "schema at 0007: up to date"
    assert nightwatch(service, "db", "migrate").returncode == 0  # at head: nothing to do, no DDL
    submitted = nightwatch(service, "task", "submit", "--name", "hello", "--namespace", "default",
                           "--image", "busybox", "--command", "true", "--json")
    assert submitted.returncode == 0, submitted.stderr
    task_id = json.loads(submitted.stdout)["id"]
    listed = nightwatch(service, "task", "list", "--json")
    assert [t["name"] for t in json.loads(listed.stdout)] == ["hello"], listed.stderr
    assert json.loads(nightwatch(service, "task", "get", str(task_id), "--json").stdout)["status"] == "Normal"

    env = {k: v for k, v in os.environ.items() if k not in ("NIGHTWATCH_CONFIG", "NIGHTWATCH_REPLICA")}
    with open(service.parent / "daemon.log", "wb") as log:
        daemon = subprocess.Popen([*NIGHTWATCH, "run", "--config", str(service)], stdout=log, stderr=log,
                                  env=env, cwd=service.parent, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: server_db.admin.statuses().get(task_id) == "Succeeded", 30,
                   lambda: f"task {task_id} Succeeded\n{(service.parent / 'daemon.log').read_text()}")
        status = nightwatch(service, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["epoch"] >= 1
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(5)
    # the DML user's daemon wrote the history of its writes (INSERT on task_event, its id's sequence)
    moves = server_db.admin.query(f"SELECT from_status, to_status, replica FROM task_event WHERE task_id = {task_id}"
                                  " ORDER BY id")
    assert moves[0][:2] == ("Normal", "Pending") and moves[-1][1] == "Succeeded", moves
    assert all(a[1] == b[0] for a, b in zip(moves, moves[1:], strict=False)), moves
    with closing(dml_store(service)) as store:
        assert store.prune_events(datetime.now(UTC) + timedelta(minutes=1)) == len(moves)
    assert server_db.admin.statuses().get(task_id) == "Succeeded"  # only events went
    text = (service.parent / "daemon.log").read_text()
    assert "Traceback" not in text and "denied" not in text.lower() and "permission" not in text.lower(), text


def dml_store(config: Path) -> TaskStore:
    """The service's own store, built from its config file (as the daemon builds it)."""
    store = yaml.safe_load(config.read_text())["store"]
    if store["backend"] == "mysql":
        m = store["mysql"]
        return mysql_store(m["host"], m["port"], m["user"], m["password"], m["database"], SystemClock())
    return postgres_store(store["postgres"]["dsn"], SystemClock())
