"""Cancel, retry and history with several real replicas while the leader is SIGKILLed.

Three ``nightwatch run`` processes on MariaDB and Redis with local jobs; 300 tasks, of which
10 % are long and cancelled by the user's own ``UPDATE`` (some before their launch, most while
running), 10 % fail once and are retried automatically (``info.retries``), and 10 % fail once
and are reset to ``Normal`` by the user's system (a retry). The leader is SIGKILLed while that
goes on. Then: every attempt had exactly one Job (the launch record), every cancelled task is
``Cancelled`` with no process of its Job left, and every transition has exactly one event (the
``task_event`` rows of each task form one unbroken chain from ``Normal`` to its status).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import pytest
from daemons import SqlTasks, cluster, fast_config, mysql_store, wait_until
from sql_databases import mysql_database

pytestmark = [pytest.mark.slow, pytest.mark.mysql, pytest.mark.redis, pytest.mark.timeout(150)]

TASKS = 300
FINAL = ("Succeeded", "Failed", "Cancelled")
LONG = "61.25"  # the cancelled tasks sleep this long: a duration nothing else uses, to find them


def kinds(i: int) -> str:
    return ("cancel" if i % 10 == 0 else "auto" if i % 10 == 1 else "reset" if i % 10 == 2 else "plain")


def info_for(markers):
    def info(i: int) -> str:
        kind = kinds(i)
        if kind == "cancel":
            return json.dumps({"image": "busybox", "command": ["sleep", LONG]})
        if kind in ("auto", "reset"):  # fails on its first attempt, succeeds on the next
            marker = markers / f"t{i}"
            script = f"[ -e {marker} ] && exit 0; touch {marker}; echo first attempt fails >&2; exit 3"
            spec = {"image": "busybox", "command": ["sh", "-c", script]}
            if kind == "auto":
                spec["retries"] = 1
            return json.dumps(spec)
        return json.dumps({"image": "busybox", "command": ["true"] if i % 2 else ["sleep", "0.1"]})
    return info


def chains(tasks: SqlTasks) -> dict[int, list[tuple[str, str, int]]]:
    out: dict[int, list[tuple[str, str, int]]] = {}
    for task_id, old, new, attempt in tasks.query(
            "SELECT task_id, from_status, to_status, attempt FROM task_event ORDER BY task_id, id"):
        out.setdefault(int(task_id), []).append((str(old), str(new), int(attempt)))
    return out


def living_sleeps() -> list[int]:
    """Pids of processes still running the cancelled tasks' ``sleep``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv[:1] == [b"sleep"] and LONG.encode() in argv:
            found.append(int(pid))
    return found


def test_cancel_and_retry_across_a_sigkilled_leader(mysql_url, redis_url, unique_name, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with mysql_database(mysql_url) as (server, name):
        tasks = SqlTasks.mysql(server, name)
        tasks.create_table()
        config = fast_config(mysql_store(mysql_url, name), redis_url, unique_name, tmp_path)
        config["jobs"]["defaults"] = {"retry_delay": "200ms", "retry_delay_max": "1s"}
        with cluster(tmp_path, config) as c:
            c.start_many(3)
            c.leader(timeout=20)
            ids = tasks.insert(TASKS, info=info_for(markers))
            kind = {task_id: kinds(i) for i, task_id in enumerate(ids, start=1)}
            cancel = [t for t, k in kind.items() if k == "cancel"]
            early, late = cancel[:5], cancel[5:]
            # A few cancelled before they could be launched (they may or may not be by then).
            tasks.execute(f"UPDATE task SET cancel_requested_at = UTC_TIMESTAMP(), cancel_reason = 'early'"
                          f" WHERE id IN ({','.join(map(str, early))})")
            wait_until(lambda: sum(s == "Running" for t, s in tasks.statuses().items() if t in late) >= 20,
                       30, lambda: f"the long tasks running\n{c.tails()}")
            leader = c.leader(timeout=1)
            tasks.execute(f"UPDATE task SET cancel_requested_at = UTC_TIMESTAMP(), cancel_reason = 'late'"
                          f" WHERE id IN ({','.join(map(str, late))})")
            leader.kill()  # SIGKILL, with cancels and automatic retries in progress
            c.leader(timeout=10, besides=[leader])
            reset = [t for t, k in kind.items() if k == "reset"]
            wait_until(lambda: all(s == "Failed" for t, s in tasks.statuses().items() if t in reset), 40,
                       lambda: f"the reset tasks to fail once\n{c.tails()}")
            tasks.execute(f"UPDATE task SET status = 'Normal' WHERE id IN ({','.join(map(str, reset))})")
            wait_until(lambda: tasks.terminal() == TASKS, 60,
                       lambda: f"all tasks terminal: {tasks.counts()}\n{c.tails()}")
            time.sleep(0.5)  # a cancelled process's SIGKILL after its grace, if it ignored SIGTERM
            rows = {int(i): (str(s), int(a)) for i, s, a in tasks.query("SELECT id, status, attempt FROM task")}
            events = chains(tasks)
            launches = Counter(tuple(line.split()[:2]) for line in c.record.read_text().splitlines()
                               if line.strip())

    expected = {"cancel": ("Cancelled", None), "auto": ("Succeeded", 2), "reset": ("Succeeded", 2),
                "plain": ("Succeeded", 1)}
    wrong = {t: rows[t] for t, k in kind.items()
             if rows[t][0] != expected[k][0] or expected[k][1] not in (None, rows[t][1])}
    assert not wrong, f"tasks that ended otherwise: {list(wrong.items())[:10]}"
    twice = {k: n for k, n in launches.items() if n != 1}
    assert not twice, f"attempts with more than one Job: {twice}"
    jobs_per_task = Counter(int(task_id) for task_id, _ in launches)
    for t, k in kind.items():
        if k != "cancel":
            assert jobs_per_task[t] == rows[t][1], (t, k, rows[t], jobs_per_task[t])
    assert living_sleeps() == [], "a cancelled task's process is still running"
    broken = {}
    for t, (status, attempt) in rows.items():
        chain = events.get(t, [])
        steps = [old for old, _, _ in chain] + [chain[-1][1]] if chain else []
        # Each event starts where the one before ended, except the user's own reset of a finished
        # task to Normal (their UPDATE, not an event), which the leader records as Normal -> Normal.
        linked = all(a[1] == b[0] or (a[1] in FINAL and b[:2] == ("Normal", "Normal"))
                     for a, b in zip(chain, chain[1:], strict=False))
        if not chain or chain[0][0] != "Normal" or not linked or chain[-1][1] != status or chain[-1][2] != attempt:
            broken[t] = steps
    assert not broken, f"tasks whose events are not one unbroken chain: {list(broken.items())[:5]}"
    print(f"{sum(len(v) for v in events.values())} events for {TASKS} tasks; "
          f"{sum(launches.values())} Jobs; leader SIGKILLed with signal {signal.SIGKILL}")
