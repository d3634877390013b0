#!/usr/bin/env python3
"""Lifecycle benchmark: what a status write costs now that it carries its event, per backend.

For each backend (SQLite, MariaDB/MySQL, PostgreSQL) a fresh database is migrated and filled
with ``--tasks`` Normal tasks through the store; then, under one leadership term, every task
is moved Normal → Pending → Running → Failed (each a fenced compare-and-set that writes its
``task_event`` row in the same statement or transaction), requeued (the next attempt, as
``task retry`` does) and cancelled (``request_cancel``). Prints p50 / p95 per operation, in
milliseconds of wall time through the store (client included), and the reads the console and
``task get`` make: one task's events, and the newest page of the list.

    .venv/bin/python benchmarks/lifecycle.py                       # all three, 500 tasks
    .venv/bin/python benchmarks/lifecycle.py --stores postgres --tasks 2000
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from store_cycle import mysql_database, postgres_database  # noqa: E402

from nightwatch.adapters.clock import SystemClock  # noqa: E402
from nightwatch.adapters.store.sql import SQLTaskStore, sqlite_store  # noqa: E402
from nightwatch.domain.model import Fence, NewTask, TaskQuery, TaskStatus  # noqa: E402

N, P, R, F = TaskStatus.NORMAL, TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.FAILED
INFO = '{"image": "busybox", "command": ["true"]}'


def timed(samples: list[float], call: Callable[[], object]) -> None:
    started = time.perf_counter()
    call()
    samples.append((time.perf_counter() - started) * 1000)


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(kind: str, store: SQLTaskStore, tasks: int) -> None:
    store.migrate()
    ids = [store.add(NewTask(f"t-{i}", "default", INFO)).id for i in range(tasks)]
    fence = Fence("bench", store.begin_term("bench"), "bench-replica")
    ops: dict[str, list[float]] = {name: [] for name in (
        "transition+event", "requeue+event", "request_cancel", "events(task)", "list page (50)")}
    for task_id in ids:
        for old, new in ((N, P), (P, R), (R, F)):
            timed(ops["transition+event"], lambda o=old, n=new, t=task_id: store.transition(
                t, o, n, "bench", fence, attempt=1))
        timed(ops["requeue+event"], lambda t=task_id: store.requeue(t, F, 1, None, fence=fence))
        timed(ops["request_cancel"], lambda t=task_id: store.request_cancel(t, "bench"))
    for task_id in ids[:200]:
        timed(ops["events(task)"], lambda t=task_id: store.events(t))
    for _ in range(200):
        timed(ops["list page (50)"], lambda: store.query(TaskQuery(limit=50)))
    for name, samples in ops.items():
        print(f"{kind:8} {name:18} n={len(samples):5}  p50 {statistics.median(samples):6.2f} ms"
              f"  p95 {p(samples, 0.95):6.2f} ms", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="sqlite,mysql,postgres")
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--mysql-url", default=os.environ.get("NIGHTWATCH_TEST_MYSQL_URL",
                                                              "mysql://root@127.0.0.1:3306"))
    parser.add_argument("--postgres-dsn", default=os.environ.get(
        "NIGHTWATCH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    print(f"# {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, python {platform.python_version()};"
          f" {args.tasks} tasks, wall time through the store")
    for kind in args.stores.split(","):
        with ExitStack() as stack:
            if kind == "sqlite":
                path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "bench.db"
                store = sqlite_store(str(path), SystemClock())
                stack.callback(store.close)
            elif kind == "mysql":
                store, _ = stack.enter_context(mysql_database(args.mysql_url))
            else:
                store, _ = stack.enter_context(postgres_database(args.postgres_dsn))
            run(kind, store, args.tasks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
